"""Parity against golden fixtures computed by the official AF2 code (``af2 check-parity``).

A fixture folder holds ``config.json`` (sizes and limits), ``cases.json`` (inputs, index),
``checkpoint/`` (the released layout at tiny size), ``audio/`` and ``expected.safetensors``.
Every size and limit is read from the fixture; nothing else is assumed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from af2.audio.decode import prepare
from af2.audio.features import log_mel, pad_windows
from af2.checkpoint.official import load_official, read_official_clap
from af2.checkpoint.weights import load_state_dict_strict
from af2.config import (AF2Config, AudioConfig, AudioTransformerConfig, HTSATConfig, XAttnConfig)
from af2.errors import CheckpointError
from af2.generate import GenerationConfig, generate, left_pad
from af2.model.htsat import HTSAT
from af2.tokens import encode_training_batch, inference_prompt

EXACT = (0.0, 0.0)
TOLERANCES = {  # (atol, rtol), from the fixture README
    "mel": (5e-3, 0.0),
    "clap_tokens": (1e-4, 1e-4), "clap_tokens_clapckpt_only": (1e-4, 1e-4), "audio_features": (1e-4, 1e-4),
    "batch_audio_features": (1e-4, 1e-4),
    "logits": (2e-4, 1e-4), "logits_zero_audio": (2e-4, 1e-4), "greedy_step_logits": (2e-4, 1e-4),
    "batch_logits": (2e-4, 1e-4),
}


@dataclass(frozen=True)
class Check:
    name: str
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool
    note: str = ""

    def line(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        tol = "bit-exact" if (self.atol, self.rtol) == EXACT else f"atol {self.atol:g} rtol {self.rtol:g}"
        return f"{status}  {self.name:<40} max abs {self.max_abs:.3g}  max rel {self.max_rel:.3g}  ({tol}){self.note}"


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor, group: str | None = None,
            where: torch.Tensor | None = None, tol: tuple[float, float] | None = None) -> Check:
    """Elementwise |a - e| <= atol + rtol·|e| over the positions selected by ``where``; ``tol``
    (atol, rtol) overrides the tolerance looked up by group."""
    atol, rtol = tol if tol is not None else TOLERANCES.get(group or name.split("/")[0], EXACT)
    if tuple(actual.shape) != tuple(expected.shape):
        return Check(name, float("inf"), float("inf"), atol, rtol, False,
                     f"  shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a, e = actual.detach().double().cpu(), expected.double()
    if where is not None:
        a, e = a[where.bool()], e[where.bool()]
    diff = (a - e).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = float((diff / e.abs().clamp_min(1e-12)).max()) if diff.numel() else 0.0
    passed = bool((diff <= atol + rtol * e.abs()).all()) and bool(torch.isfinite(a).all())
    return Check(name, max_abs, max_rel, atol, rtol, passed)


def fixture_config(fixture: Path) -> AF2Config:
    """The AF2Config a fixture describes (its config.json; the LM from checkpoint/lm_config.json)."""
    c = json.loads((fixture / "config.json").read_text())
    h, m, clap = c["htsat"], c["mel"], c["clap_config"]
    unsupported = {k: h[k] for k, ok in (("ape", False), ("patch_norm", True), ("norm_before_mlp", "ln"))
                   if h.get(k, ok) != ok}
    if unsupported or m.get("power", 2.0) != 2.0 or m.get("mel_scale", "htk") != "htk":
        raise CheckpointError(f"{fixture}/config.json: unsupported settings {unsupported or m}")
    audio = AudioConfig(sample_rate=c["sample_rate"], window_seconds=clap["window_length"],
                        window_overlap_seconds=clap["window_overlap"], max_windows=clap["max_num_window"],
                        n_fft=m["n_fft"], win_length=m["win_length"], hop_length=m["hop_length"], n_mels=m["n_mels"],
                        f_min=m["f_min"], f_max=m["f_max"], amin=m["amplitude_to_db"]["amin"])
    htsat = HTSATConfig(**{f: (tuple(h[f]) if isinstance(h[f], list) else h[f]) for f in (
        "spec_size", "patch_size", "patch_stride", "in_chans", "window_size", "mlp_ratio", "qkv_bias", "embed_dim",
        "depths", "num_heads", "mel_bins", "drop_path_rate", "enable_fusion", "fusion_type", "layernorm_eps",
        "bn0_eps", "num_classes", "unused_stft_n_fft")})
    at_kw, at = c["audio_transformer_kwargs"], c["audio_transformer"]
    transformer = AudioTransformerConfig(n_layers=at_kw["n_layers"], n_head=at_kw["n_head"], d_inner=at_kw["d_inner"],
                                         rotary_base=at["rotary_base"], layernorm_eps=at["layernorm_eps"],
                                         mask_fill=at["mask_fill"], scale_emb=at["scale_emb"])
    x = c["gated_xattn"]
    xattn = XAttnConfig(every_n_layers=x["every_n_layers"], heads=x["heads"], dim_head=x["dim_head"],
                        ff_mult=x["ff_mult"], layernorm_eps=x["layernorm_eps"])
    cfg = AF2Config(audio=audio, htsat=htsat, audio_transformer=transformer, xattn=xattn)
    if cfg.audio_dim != at["d_model"] or cfg.audio_dim != x["dim_audio"]:
        raise CheckpointError(f"{fixture}/config.json: audio width {cfg.audio_dim} disagrees with d_model/dim_audio")
    return cfg


@dataclass(frozen=True)
class _Run:
    """One fixture's loaded model and expected tensors; ``add`` records (and logs) a Check."""

    fixture: Path
    cases: dict
    expected: dict[str, torch.Tensor]
    model: torch.nn.Module
    tokenizer: object
    special: object
    add: Callable[[Check], None]

    @property
    def cfg(self) -> AF2Config:
        return self.model.cfg


def _open_fixture(fixture: Path, add: Callable[[Check], None]) -> _Run:
    for name in ("config.json", "cases.json", "expected.safetensors", "checkpoint"):
        if not (fixture / name).exists():
            raise CheckpointError(f"{fixture / name}: missing; is {fixture} a golden fixture folder?")
    cases = json.loads((fixture / "cases.json").read_text())
    expected = load_file(str(fixture / "expected.safetensors"))
    model, tokenizer, special = load_official(fixture / "checkpoint", cfg=fixture_config(fixture))
    if special.eos != cases["special_token_ids"]["eos <|endoftext|>"]:
        raise CheckpointError(f"{fixture}: tokenizer eos id {special.eos} differs from the fixture's")
    return _Run(fixture, cases, expected, model, tokenizer, special, add)


def _answer_text(spec: dict) -> str:
    return " ".join(f"w{i}" for i in spec["answer_ids"])


def _check_case(run: _Run, case: str, spec: dict) -> torch.Tensor:
    """Front end, towers and teacher-forced logits of one case; returns its windows (W, S)."""
    cfg, expected, add, model = run.cfg, run.expected, run.add, run.model
    windows, _ = prepare(run.fixture / spec["file"], cfg.audio)
    add(compare(f"windows/{case}", windows, expected[f"windows/{case}"]))
    add(compare(f"window_mask/{case}", torch.ones(windows.shape[0]), expected[f"window_mask/{case}"]))
    mel = log_mel(windows, cfg.audio)
    add(compare(f"mel/{case}", mel, expected[f"mel/{case}"]))
    add(compare(f"clap_tokens/{case}", model.audio_encoder(mel), expected[f"clap_tokens/{case}"]))
    mask = torch.ones(1, windows.shape[0])
    audio = model.encode_audio(windows[None], mask, cache_kv=True)
    add(compare(f"audio_features/{case}", audio.features[0], expected[f"audio_features/{case}"]))

    batch = encode_training_batch(run.tokenizer, [spec["prompt_text"]], [_answer_text(spec)], cfg.tokens)
    ids = batch["input_ids"]
    add(compare(f"input_ids/{case}", ids[0], expected[f"input_ids/{case}"]))
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"], audio=audio).logits[0]
    add(compare(f"logits/{case}", logits, expected[f"logits/{case}"]))
    if f"logits_zero_audio/{case}" in expected:
        zero = model(torch.zeros_like(windows[None]), mask, ids, batch["attention_mask"]).logits[0]
        add(compare(f"logits_zero_audio/{case}", zero, expected[f"logits_zero_audio/{case}"]))
    _check_greedy(run, case, spec, audio)
    return windows


def _check_greedy(run: _Run, case: str, spec: dict, audio) -> None:
    """Greedy decoding of one case: prompt ids, new tokens and each step's logits."""
    expected, add, special = run.expected, run.add, run.special
    prompt = run.tokenizer(inference_prompt(spec["prompt_text"], run.cfg.tokens), add_special_tokens=False)["input_ids"]
    add(compare(f"greedy_prompt_ids/{case}", torch.tensor(prompt), torch.tensor(spec["greedy"]["prompt_ids"])))
    want = expected[f"greedy_new_tokens/{case}"]
    p_ids, p_mask = left_pad([prompt], special.pad)
    step_logits: list[torch.Tensor] = []
    new = generate(run.model, audio, p_ids, p_mask, GenerationConfig(max_new_tokens=len(want) if len(want) else 12),
                   (special.eos,), special.pad, step_logits)[0]
    add(compare(f"greedy_new_tokens/{case}", torch.tensor(new), want))
    add(compare(f"greedy/{case}", torch.tensor(prompt + new), expected[f"greedy/{case}"]))
    add(compare(f"greedy_step_logits/{case}", torch.stack(step_logits, 1)[0], expected[f"greedy_step_logits/{case}"]))


def _check_clap(run: _Run, windows_by_case: dict[str, torch.Tensor]) -> None:
    """A silent window, and the tower loaded from clap_ckpt/ alone, where the fixture records them."""
    cfg, expected, add = run.cfg, run.expected, run.add
    if "clap_tokens/zero_window" in expected:
        silent = log_mel(torch.zeros(1, cfg.audio.window_samples), cfg.audio)
        add(compare("clap_tokens/zero_window", run.model.audio_encoder(silent)[0], expected["clap_tokens/zero_window"]))
    clap_only = [k for k in expected if k.startswith("clap_tokens_clapckpt_only/")]
    if not clap_only:
        return
    read = read_official_clap(run.fixture / "checkpoint")
    if read is None:
        raise CheckpointError(f"{run.fixture}/checkpoint/clap_ckpt: no epoch_*.pt, but the fixture expects it")
    tower = HTSAT(cfg.htsat).eval()
    load_state_dict_strict(tower, read[0], str(read[1]))
    for key in clap_only:
        case = key.split("/", 1)[1]
        add(compare(key, tower(log_mel(windows_by_case[case], cfg.audio)), expected[key]))


def _check_batch(run: _Run, windows_by_case: dict[str, torch.Tensor]) -> None:
    """All cases as one padded batch: masks, ids, audio features and logits where they are real."""
    cfg, expected, add = run.cfg, run.expected, run.add
    order = run.cases["batch"]["order"]
    windows, window_mask = pad_windows([windows_by_case[c] for c in order], cfg.audio.max_windows)
    add(compare("batch_window_mask", window_mask, expected["batch_window_mask"]))
    specs = [run.cases["cases"][c] for c in order]
    batch = encode_training_batch(run.tokenizer, [s["prompt_text"] for s in specs], [_answer_text(s) for s in specs],
                                  cfg.tokens)
    add(compare("batch_input_ids", batch["input_ids"], expected["batch_input_ids"]))
    add(compare("batch_attention_mask", batch["attention_mask"], expected["batch_attention_mask"]))
    audio = run.model.encode_audio(windows, window_mask)
    add(compare("batch_audio_features_mask", audio.mask.float(), expected["batch_audio_features_mask"]))
    add(compare("batch_audio_features", audio.features, expected["batch_audio_features"], where=audio.mask))
    logits = run.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], audio=audio).logits
    add(compare("batch_logits", logits, expected["batch_logits"], where=batch["attention_mask"]))


def run_parity(fixture_dir: str | Path, log: Callable[[str], None] = print) -> list[Check]:
    """Run every case and the batch of a fixture; return one Check per tensor compared."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        log(check.line())

    run = _open_fixture(Path(fixture_dir), add)
    with torch.inference_mode():
        windows_by_case = {case: _check_case(run, case, spec) for case, spec in run.cases["cases"].items()}
        _check_clap(run, windows_by_case)
        _check_batch(run, windows_by_case)
    return checks
