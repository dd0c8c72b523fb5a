"""Training parity against a golden fixture made by the official TRAINING code
(``af2 check-train-parity``).

The fixture (``af2-train-golden-a`` and others of its format) holds ``config.json`` (sizes, limits,
data and optimizer settings), ``cases.json`` (items, blend and batch order, trainable parameters,
index), ``checkpoint/`` (the released layout at tiny size), ``manifests/``, ``audio/`` and
``expected.safetensors``. Everything runs through af2's own training path: the manifest reader and
blend, ``ManifestDataset``, the ``Collator`` (template, padding, label masking), stage freezing,
``af2.train.alm``'s loss and embedding-row mask, and the engine's clip and AdamW. Every size, limit,
seed and order is read from the fixture.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from af2.checkpoint.official import alias_target, load_official, official_to_ours
from af2.config import AF2Config, AudioConfig, AudioTransformerConfig, HTSATConfig, TokensConfig, XAttnConfig
from af2.errors import CheckpointError
from af2.parity import Check, compare
from af2.tokens import special_token_ids
from af2.train.alm import alm_task, forward_loss, token_nll, with_training_options
from af2.train.config import DataConfig, OptimConfig, TrainConfig
from af2.train.engine import finish_gradients, make_optimizer
from af2.train.schedule import make_scheduler
from af2.train.stages import apply_stage, train_mode

# (atol, rtol) per expected-tensor group, from the fixture README; ids, masks and labels are exact.
TOLERANCES = {
    "loss": (0.0, 1e-5), "token_nll": (1e-4, 1e-5), "logits": (2e-4, 1e-4),
    "grad_norms": (0.0, 1e-4), "grad_total_norm_after_embed_mask": (0.0, 1e-4),
    "grad_after_mask_and_clip": (1e-6, 1e-4), "adamw_step": (1e-6, 0.0),
}
RAW_GRAD_RTOL = 1e-4  # raw gradients: atol 1e-4 x max|expected|, rtol 1e-4
# The first Adam step moves an element by ~lr*sign(grad): one whose gradient is ~0 may flip.
FLIP_GRAD, FLIP_DIFF, FLIP_COUNT = 1e-6, 2e-4, 5


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def fixture_model_config(fixture: Path, c: dict[str, Any]) -> AF2Config:
    """The AF2Config a training fixture's config.json describes (mel: its ``mel`` section, else
    AF2's defaults, which are the official training CLAP's: f_max 8000)."""
    clap, h, m = c["clap_config"], c["htsat"], c.get("mel", {})
    mel = {k: m[k] for k in ("n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max") if k in m}
    if "amplitude_to_db" in m:
        mel["amin"] = m["amplitude_to_db"]["amin"]
    audio = AudioConfig(sample_rate=c["sample_rate"], window_seconds=clap["window_length"],
                        window_overlap_seconds=clap["window_overlap"], max_windows=clap["max_num_window"], **mel)
    htsat_fields = set(HTSATConfig.__dataclass_fields__)
    htsat = HTSATConfig(**{k: _tuple(v) for k, v in h.items() if k in htsat_fields})
    if htsat.num_features != c["audio_transformer"]["d_model"]:
        raise CheckpointError(f"{fixture}/config.json: HTSAT width {htsat.num_features} != audio_transformer.d_model")
    at = c["audio_transformer"]
    at_fields = set(AudioTransformerConfig.__dataclass_fields__) - {"attn_dropout"}
    transformer = AudioTransformerConfig(**{k: v for k, v in at.items() if k in at_fields})
    x = c["gated_xattn"]
    xattn = XAttnConfig(**{k: v for k, v in x.items() if k in XAttnConfig.__dataclass_fields__})
    tokens = TokensConfig(max_tokens=c["data_config"]["max_tokens"])
    return AF2Config(audio=audio, htsat=htsat, audio_transformer=transformer, xattn=xattn, tokens=tokens)


def _optim(c: dict[str, Any], cases: dict[str, Any]) -> OptimConfig:
    """AdamW settings: lr as used at the step, decay from the per-parameter groups, betas/eps/clip
    from the optimizer description (torch defaults when it does not say)."""
    text = c["train"]["optimizer"] + " " + c["train"].get("grad_clip", "")
    lrs = {v["lr_used"] for v in cases["controls"].values() if isinstance(v, dict) and "lr_used" in v}
    lr = lrs.pop() if len(lrs) == 1 else float(re.search(r"lr=([0-9.e+-]+)", text).group(1))
    betas = re.search(r"betas \(([0-9.]+),\s*([0-9.]+)\)", text)
    eps = re.search(r"eps ([0-9.e+-]+)", text)
    clip = re.search(r"clip_grad_norm_\(model\.parameters\(\), ([0-9.]+)\)", text)
    decay = max(p["weight_decay_group"] for p in cases["trainable_parameters"])
    return OptimConfig(lr=lr, betas=(float(betas[1]), float(betas[2])) if betas else (0.9, 0.999),
                       eps=float(eps[1]) if eps else 1e-8, weight_decay=decay, decay_params="xattn",
                       warmup_steps=0, clip_norm=float(clip[1]) if clip else 1.0)


def fixture_train_config(fixture: Path, c: dict[str, Any], cases: dict[str, Any], variant: str) -> TrainConfig:
    """The TrainConfig of the fixture's step: stage 1 freezing (CLAP trains only with ``finetune``),
    its data, batch and optimizer; dropout off as the fixture ran (S1b); the variant's x-attn mask."""
    d = c["data_config"]
    if float(c["train"].get("loss_multiplier", 1.0)) != 1.0:
        raise ValueError(f"{fixture}/config.json: train.loss_multiplier {c['train']['loss_multiplier']} is not "
                         "supported; af2 trains with the plain mean loss (the official default 1.0)")
    data = DataConfig(dataset_file_root=str(fixture / d["dataset_file_root"]), data_root=str(fixture / d["data_root"]),
                      blend={k: float(v["weight"]) for k, v in d["dataset_blending_config"].items()},
                      global_weight=float(d["dataset_blending_global_weight"]), max_tokens=int(d["max_tokens"]))
    trainable = ("clap",) * bool(c["clap_config"].get("finetune")) + ("audio_transformer", "xattn", "embeddings")
    return TrainConfig(stage=f"check-train-parity/{variant}", model="tiny", trainable=trainable,
                       embedding_grad_rows="special", xattn_mask=variant_mask(variant),
                       xattn_fewshot_tokens=int(c["gated_xattn"]["max_window_per_audio"]), audio_attn_dropout=0.0,
                       windows=int(c["clap_config"]["max_num_window"]), data=data, optim=_optim(c, cases),
                       batch_size=int(c["train"]["batch_size"]),
                       grad_accum=int(c["train"]["gradient_accumulation_steps"]),
                       max_steps=1, precision="fp32", progress=False)


def variant_mask(variant: str) -> str:
    """The ``xattn_mask`` a fixture variant was computed with (its name says which)."""
    return "official_fewshot" if "fewshot" in variant else "full"


def ours(official: str) -> str:
    return official_to_ours(alias_target(official) or official)


def _sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def _hash_check(name: str, actual: torch.Tensor, want: str) -> Check:
    ok = _sha256(actual) == want
    return Check(name, 0.0 if ok else float("nan"), 0.0 if ok else float("nan"), 0.0, 0.0, ok,
                 "  sha256 " + ("equal" if ok else "DIFFERS"))


def _count_check(name: str, mismatches: list[str], total: int) -> Check:
    return Check(name, float(len(mismatches)), 0.0, 0.0, 0.0, not mismatches,
                 f"  {total - len(mismatches)}/{total} agree" + (f"; first: {mismatches[0]}" if mismatches else ""))


def _check_data(task, cases: dict[str, Any], expected: dict[str, torch.Tensor], add) -> dict[str, torch.Tensor]:
    """Blend order, every item (windows, ids, masks, one-item labels) and the collated batch."""
    items = task.dataset.items
    bad = []
    for key, spec in cases["items"].items():
        got, want = items[spec["blend_index"]], spec["manifest_item"]
        fields = (got.name, got.prompt, got.output, got.audio_start)
        if fields != (want["name"], want["prompt"], want["output"], float(want.get("audio_start", 0.0))):
            bad.append(f"{key}: {got.name!r}")
    add(_count_check("blend_order", bad, len(cases["items"])))
    for key, spec in cases["items"].items():
        one = task.collate([task.dataset[spec["blend_index"]]])
        windows = one["windows"][0]
        add(_hash_check(f"items/{key}/windows_sha256", windows, spec["windows_sha256_f32"]))
        head = expected[f"items/{key}/windows_head"]
        add(compare(f"items/{key}/windows_head", windows[:, :head.shape[1]], head))
        add(compare(f"items/{key}/window_mask", one["window_mask"][0], expected[f"items/{key}/window_mask"]))
        for field in ("input_ids", "attention_mask", "labels"):
            add(compare(f"items/{key}/{field}", one[field], expected[f"items/{key}/{field}"]))
    b = cases["batch"]
    batch = task.collate([task.dataset[i] for i in b["rows_blend_indices"]])
    add(_hash_check("batch/audio_clips_sha256", batch["windows"], b["audio_clips_sha256_f32"]))
    add(compare("batch/audio_embed_mask", batch["window_mask"], expected["batch/audio_embed_mask"]))
    add(compare("batch/input_ids", batch["input_ids"], expected["batch/input_ids"]))
    add(compare("batch/attention_mask", batch["attention_mask"].bool(), expected["batch/attention_mask"]))
    add(compare("batch/labels", batch["labels"], expected["batch/labels"]))
    return batch


def _check_trainable(model, optimizer, cases: dict[str, Any], add) -> None:
    """The stage's trainable set and each tensor's weight-decay group equal the official ones."""
    params = dict(model.named_parameters())
    want = {ours(p["name"]): p for p in cases["trainable_parameters"]}
    have = {n for n, p in params.items() if p.requires_grad}
    bad = [f"missing {n}" for n in sorted(set(want) - have)] + [f"extra {n}" for n in sorted(have - set(want))]
    bad += [f"{n}: {params[n].numel()} != {p['numel']}" for n, p in want.items() if n in params
            and params[n].numel() != p["numel"]]
    add(_count_check("trainable_parameters", bad, len(want)))
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    bad = [f"{n}: {decay.get(id(params[n]))} != {p['weight_decay_group']}" for n, p in want.items()
           if n in params and decay.get(id(params[n])) != p["weight_decay_group"]]
    add(_count_check("weight_decay_groups", bad, len(want)))


def _chosen(cases: dict[str, Any]) -> dict[str, tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]]:
    """Short name -> (name in expected.safetensors, our parameter name, a function picking the
    tensor, or its embedding rows, out of a parameter-shaped tensor)."""
    out = {}
    for short, official in cases["chosen_small_tensors"].items():
        if isinstance(official, str):
            out[short] = (official, ours(official), lambda t: t)
    rows = cases["chosen_small_tensors"]["embed_rows"]
    index = torch.tensor(rows["rows"])
    out["embed_rows"] = ("embed_rows", ours(rows["param"]), lambda t: t[index])
    return out


def _adamw_check(name: str, actual: torch.Tensor, expected: torch.Tensor, grad: torch.Tensor) -> Check:
    """atol as the README; a few elements whose clipped gradient is ~0 may flip sign (<= 2e-4)."""
    check = compare(name, actual, expected, tol=TOLERANCES["adamw_step"])
    if check.passed:
        return check
    diff = (actual.double() - expected.double()).abs()
    off = diff > check.atol
    flips = int(off.sum())
    if flips <= FLIP_COUNT and bool((grad.abs()[off] < FLIP_GRAD).all()) and bool((diff[off] <= FLIP_DIFF).all()):
        return replace(check, passed=True, note=f"  {flips} near-zero-gradient element(s) flipped")
    return check


def _check_step(model, task, cfg: TrainConfig, batch, v: str, cases, expected, add) -> None:
    """Forward, loss, backward, embedding mask, clip and one AdamW step of variant ``v``."""
    optimizer = make_optimizer(cfg, model)
    make_scheduler(optimizer, cfg.optim, cfg.max_steps)  # sets the step's lr, as the engine does
    _check_trainable(model, optimizer, cases, add)
    chosen = _chosen(cases)
    params = dict(model.named_parameters())
    for short, (key, name, pick) in chosen.items():
        add(compare(f"params_before/{short}", pick(params[name].detach()), expected[f"params_before/{key}"]))
    train_mode(model)
    optimizer.zero_grad(set_to_none=True)
    loss, logits = forward_loss(model, batch)
    add(compare(f"loss/{v}", loss, expected[f"loss/{v}"], tol=TOLERANCES["loss"]))
    add(compare(f"token_nll/{v}", token_nll(logits, batch["labels"]), expected[f"token_nll/{v}"],
                tol=TOLERANCES["token_nll"]))
    add(compare(f"logits/{v}", logits, expected[f"logits/{v}"], where=batch["attention_mask"],
                tol=TOLERANCES["logits"]))
    (loss / cfg.grad_accum).backward()  # as the engine (and the official loop) divide it
    grads = [params[ours(n)].grad for n in cases["grad_norms_order"]]
    norms = torch.stack([torch.zeros((), dtype=torch.float64) if g is None else g.double().norm() for g in grads])
    add(compare(f"grad_norms/{v}", norms, expected[f"grad_norms/{v}"], tol=TOLERANCES["grad_norms"]))
    for short, (key, name, pick) in chosen.items():
        want = expected[f"grad/{v}/{key}"]
        atol = 0.0 if want.numel() == 1 else RAW_GRAD_RTOL * float(want.abs().max())
        add(compare(f"grad/{v}/{short}", pick(params[name].grad), want, tol=(atol, RAW_GRAD_RTOL)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = finish_gradients(task, model, trainable, cfg.optim.clip_norm)
    add(compare(f"grad_total_norm_after_embed_mask/{v}", total, expected[f"grad_total_norm_after_embed_mask/{v}"],
                tol=TOLERANCES["grad_total_norm_after_embed_mask"]))
    for short, (key, name, pick) in chosen.items():
        add(compare(f"grad_after_mask_and_clip/{v}/{short}", pick(params[name].grad),
                    expected[f"grad_after_mask_and_clip/{v}/{key}"], tol=TOLERANCES["grad_after_mask_and_clip"]))
    optimizer.step()
    for short, (key, name, pick) in chosen.items():
        add(_adamw_check(f"adamw_step/{v}/{short}", pick(params[name].detach()), expected[f"adamw_step/{v}/{key}"],
                         expected[f"grad_after_mask_and_clip/{v}/{key}"]))


def fixture_variants(expected: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k.split("/", 1)[1] for k in expected if k.startswith("loss/"))


def run_train_parity(fixture_dir: str | Path, variants: list[str] | None = None,
                     log: Callable[[str], None] = print) -> list[Check]:
    """Run the data checks once and the training step of every variant; one Check per tensor."""
    fixture = Path(fixture_dir)
    for name in ("config.json", "cases.json", "expected.safetensors", "checkpoint", "manifests"):
        if not (fixture / name).exists():
            raise FileNotFoundError(f"{fixture / name}: missing; is {fixture} a golden training fixture folder?")
    c = json.loads((fixture / "config.json").read_text())
    cases = json.loads((fixture / "cases.json").read_text())
    expected = load_file(str(fixture / cases.get("expected_file", "expected.safetensors")))
    available = fixture_variants(expected)
    unknown = sorted(set(variants or ()) - set(available))
    if unknown:
        raise ValueError(f"{fixture}: no variant(s) {unknown}; the fixture has {available}")
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        log(check.line())

    batch = None
    for v in variants or available:
        cfg = fixture_train_config(fixture, c, cases, v)
        arch = with_training_options(fixture_model_config(fixture, c), cfg)
        model, tokenizer, _ = load_official(fixture / "checkpoint", cfg=arch)
        ids = special_token_ids(tokenizer, arch.tokens)
        want = cases["special_token_ids"]
        got = {arch.tokens.audio: ids.audio, arch.tokens.end_of_chunk: ids.end_of_chunk, arch.tokens.pad: ids.pad,
               arch.tokens.sep: ids.sep, arch.tokens.eos: ids.eos}
        if any(want.get(k, i) != i for k, i in got.items()):
            raise CheckpointError(f"{fixture}: tokenizer ids {got} differ from cases.json special_token_ids {want}")
        apply_stage(model, cfg.trainable)
        task = alm_task(cfg, model, tokenizer)
        if batch is None:
            with torch.no_grad():
                batch = _check_data(task, cases, expected, add)
        step_batch = task.collate([task.dataset[i] for i in cases["batch"]["rows_blend_indices"]])
        _check_step(model, task, cfg, step_batch, v, cases, expected, add)
    return checks


def group_of(name: str) -> str:
    """``items/item3/labels`` -> ``items/labels``; ``grad/a_full_xattn/gate_ff`` -> ``grad/a_full_xattn``."""
    parts = name.split("/")
    if parts[0] == "items":
        return f"items/{parts[-1]}"
    return parts[0] if parts[0] == "params_before" else "/".join(parts[:2])


def summarise(checks: list[Check]) -> list[str]:
    """One line per group: worst abs/rel error and PASS/FAIL."""
    groups: dict[str, list[Check]] = {}
    for check in checks:
        groups.setdefault(group_of(check.name), []).append(check)
    lines = []
    for group, members in groups.items():
        ok = all(m.passed for m in members)
        worst_abs = max(m.max_abs for m in members)
        worst_rel = max(m.max_rel for m in members)
        lines.append(f"{'PASS' if ok else 'FAIL'}  {group:<44} {len(members):>3} tensor(s)  "
                     f"max abs {worst_abs:.3g}  max rel {worst_rel:.3g}")
    return lines
