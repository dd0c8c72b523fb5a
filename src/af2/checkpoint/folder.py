"""af2 model folders: ``config.json`` (the AF2Config) + ``model.safetensors`` + the tokenizer files.

A folder whose ``config.json`` names a ``base_lm`` holds only what is not the base LM's: the audio
tower, the audio transformer, the cross-attention blocks and the embedding rows added for AF2's
special tokens (``extra_rows.<key>``); the frozen LM is read from the base LM (``af2.base_lm``)
when loading. Every training checkpoint is such a folder, so ``af2.load(run_dir)`` answers with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save_file

from af2.checkpoint.weights import (check_finite, load_state_dict_strict, read_safetensors, read_weights,
                                    tie_int8_head, tied_aliases)
from af2.config import AF2Config, check_sizes, config_from_dict, config_to_dict
from af2.errors import CheckpointError
from af2.jsonl import atomic_path, atomic_write_text, read_json
from af2.model.af2 import EMBEDDING_KEY, AF2Model
from af2.registry import RELEASED_BASES, model_entry


EXTRA_ROWS = "extra_rows."


@dataclass(frozen=True)
class BaseRef:
    """The base LM a model folder leaves out: its name (registry name, folder or hub id) and how many
    embedding rows it has; rows from ``vocab_size`` on are AF2's and are saved with the model."""

    name: str
    vocab_size: int
    full_embedding: bool = False  # the whole embedding was trained: save all of it


def is_base_key(key: str) -> bool:
    """Whether ``key`` of an AF2Model state dict is a tensor of the frozen base LM."""
    return key.startswith("lm.") and ".xattn." not in key and ".lora_" not in key


def model_state_to_save(state: Mapping[str, torch.Tensor], aliases: Mapping[str, str] | None = None,
                        base: BaseRef | None = None) -> dict[str, torch.Tensor]:
    """The tensors a model folder stores: all but tied aliases, and with ``base`` all but the base LM's."""
    out = {}
    for key, value in state.items():
        if aliases and key in aliases:
            continue
        if base is not None and is_base_key(key):
            if key == EMBEDDING_KEY:
                if base.full_embedding:
                    out[key] = value
                else:
                    out[EXTRA_ROWS + key] = value[base.vocab_size:]
            continue
        out[key] = value
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def save_pretrained(model: AF2Model, out_dir: str | Path, tokenizer=None, base: BaseRef | None = None,
                    state: Mapping[str, torch.Tensor] | None = None, cfg: AF2Config | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer) to ``out_dir``; with ``base`` the
    frozen base LM is left out and named in config.json instead. ``state`` (default: the model's)
    lets a trainer pass the full state it gathered across ranks; ``cfg`` (default: the model's) is written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = model_state_to_save(model.state_dict() if state is None else state, tied_aliases(model), base)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "af2": "2" if base else "1"})
    header = {"af2_version": 2, "base_lm": dataclasses.asdict(base)} if base else {"af2_version": 1}
    atomic_write_text(out / "config.json", json.dumps({**header, **config_to_dict(cfg or model.cfg)}, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
        _drop_truncation(out / "tokenizer.json")
    return out


def _drop_truncation(path: Path) -> None:
    """A trainer's tokenizer truncates to its max_tokens, and save_pretrained writes that into
    tokenizer.json; a model folder must not cut users' prompts, so the saved file keeps none."""
    if not path.is_file():
        return
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("truncation") is not None:
        doc["truncation"] = None
        atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=2))


def read_model_folder_config(model_dir: str | Path) -> tuple[AF2Config, BaseRef | None]:
    """The AF2Config of a folder written by af2, and its base LM reference (None: all weights inside)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected a folder written by af2 (save_pretrained or `af2 convert`)")
    data = read_json(path, CheckpointError, max_bytes=1 << 24)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object (an AF2Config), got {type(data).__name__}")
    data.pop("af2_version", None)
    base = data.pop("base_lm", None)
    try:
        cfg = config_from_dict(AF2Config, data)
        check_sizes(cfg, "config")
        ref = BaseRef(**base) if base else None
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: {exc}") from None
    return cfg, ref


def read_config(model_dir: str | Path) -> AF2Config:
    return read_model_folder_config(model_dir)[0]


def load_pretrained_weights(model: AF2Model, model_dir: str | Path, base: BaseRef | None = None,
                            strict: bool = False) -> None:
    """Load a folder's ``model.safetensors`` strictly; with ``base`` the model already holds the base LM
    and the file must hold exactly the rest (plus the extra embedding rows). NaN/Inf weights warn
    (``strict``: raise)."""
    path = Path(model_dir) / "model.safetensors"
    load_model_state(model, read_safetensors(path), str(path), base, strict)


def load_model_state(model: AF2Model, state: dict[str, torch.Tensor], source: str, base: BaseRef | None = None,
                     strict: bool = False) -> None:
    """Strictly load ``state`` as ``model_state_to_save`` wrote it (the base LM's tensors already in ``model``)."""
    check_finite(state, source, strict)
    state = expand_saved_state(model, state, source, base)
    expected = model.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
           for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{source}: wrong shapes: {bad[:8]}")
    load_state_dict_strict(model, state, source)


def expand_saved_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str,
                       base: BaseRef | None) -> dict[str, torch.Tensor]:
    """The full state dict of ``model`` from a folder's saved tensors: with ``base``, the base LM's
    tensors are taken from ``model`` (which holds the base LM) and the extra embedding rows appended."""
    state = dict(state)
    if base is None:
        return state
    expected = model.state_dict()
    rows = state.pop(EXTRA_ROWS + EMBEDDING_KEY, None)
    embedding = state.pop(EMBEDDING_KEY, None)
    if embedding is None:
        if rows is None:
            raise CheckpointError(f"{source}: neither {EMBEDDING_KEY} nor its extra rows are stored")
        embedding = torch.cat([expected[EMBEDDING_KEY][:base.vocab_size].to(rows.dtype), rows])
    tied = tied_aliases(model)
    for key, value in expected.items():
        if is_base_key(key) and key != EMBEDDING_KEY and key not in tied:
            state.setdefault(key, value)
    state[EMBEDDING_KEY] = embedding
    return state


def load_pretrained(model_dir: str | Path, dtype: torch.dtype = torch.float32, int8: bool = False,
                    strict: bool = False) -> AF2Model:
    """Build the model of an af2 folder (``config.json`` + ``model.safetensors``) in ``dtype``
    without a second copy: the model is made on the meta device and adopts the tensors read.
    ``int8``: the linear weights are quantized as they are read (see ``af2.model.quant``), so
    the float weights never exist whole. A folder that names its base LM (``BaseRef``) is
    built from that base LM first, loaded, then cast (and quantized). NaN/Inf weights warn
    (``strict``: raise)."""
    from af2.model.quant import quantize_int8

    cfg, base = read_model_folder_config(model_dir)
    if base is not None:
        return _load_on_base(model_dir, cfg, base, dtype, int8, strict)
    with torch.device("meta"):
        model = AF2Model(cfg).to(dtype)
        if int8:
            quantize_int8(model)
    source = str(Path(model_dir) / "model.safetensors")
    state = read_weights(model_dir, model.state_dict(), dtype)
    check_finite(state, source, strict)
    tie_int8_head(model, state)
    load_state_dict_strict(model, state, source, assign=True)
    return model.to(dtype).eval()


def _load_on_base(model_dir: str | Path, cfg: AF2Config, base: BaseRef, dtype: torch.dtype, int8: bool,
                  strict: bool) -> AF2Model:
    """A folder that holds only the trained weights: its frozen LM comes from the base LM it names."""
    from af2.base_lm import load_base_lm
    from af2.model.quant import quantize_int8

    cfg, lm, _ = load_base_lm(base.name, cfg, cfg.vocab_size)
    model = AF2Model(cfg, lm=lm)
    load_pretrained_weights(model, model_dir, base, strict)
    model = model.to(dtype)
    if int8:
        quantize_int8(model)
    return model.eval()


MODEL_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt")


def resolve_model_dir(path_or_id: str | Path) -> Path:
    """A registry name (``af2-nano``), a local folder (a training run's folder means its newest
    checkpoint), or a hub id resolved through the local HF cache (downloads only when online)."""
    entry = model_entry(str(path_or_id))
    if entry is not None and entry.package_dir:
        shipped = Path(str(resources.files("af2") / entry.package_dir))
        if not (shipped / "config.json").is_file():
            raise CheckpointError(f"model {entry.name}: its weights are not in this installation ({shipped}); "
                                  "reinstall af2 from a release or a full checkout")
        return shipped
    if entry is not None and entry.hub_id:
        path_or_id = entry.hub_id
    path = Path(path_or_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: not a folder; pass a model folder or a hub id")
        latest = path / "checkpoints" / "latest"
        if latest.is_file() and not (path / "config.json").is_file():
            return path / "checkpoints" / latest.read_text().strip()
        return path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_id)):
        raise CheckpointError(f"{path_or_id}: no such folder, and not a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return Path(snapshot_download(str(path_or_id), local_files_only=offline))
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        base = RELEASED_BASES.get(next((s for s in RELEASED_BASES if str(path_or_id).lower().endswith(f"-{s.lower()}")), ""))
        also = f" and `hf download {base}` (its base LM)" if base else ""
        how = ("it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading; "
               f"run `hf download {path_or_id}`{also} on a machine with internet" if offline
               else f"download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        raise CheckpointError(f"cannot get model {path_or_id}: {how}") from exc


def export_model_folder(source: str | Path, out_dir: str | Path) -> Path:
    """Copy the model files of a run's newest checkpoint (or of a checkpoint / model folder) to ``out_dir``."""
    import shutil

    folder = resolve_model_dir(source)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: not a model folder (config.json + model.safetensors)")
    read_model_folder_config(folder)  # fails loudly on a damaged config before anything is copied
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FOLDER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    fold_audio_whitening(out)
    return out


def fold_audio_whitening(folder: Path) -> bool:
    """In a model folder trained with ``xattn.audio_whitening``, fold the fixed map W into every block's
    keys and values (to_kv(W f) = (to_kv · W) f, multiplied in fp64 and stored in the weight's dtype) and drop
    it, so the folder has AF2's layout (a time map, xattn.audio_time_features, added after W becomes W⁻¹·map so
    the blocks read the same sum). Returns whether there was a map to fold."""
    cfg_path = folder / "config.json"
    data = read_json(cfg_path, CheckpointError, max_bytes=1 << 24)
    if not data.get("xattn", {}).get("audio_whitening"):
        return False
    tensors = read_safetensors(folder / "model.safetensors")
    if "audio_whitening" not in tensors:
        raise CheckpointError(f"{folder}: config.json names xattn.audio_whitening but model.safetensors has no "
                              "audio_whitening tensor")
    whitening = tensors.pop("audio_whitening").double()
    for key in [k for k in tensors if k.endswith(".xattn.attn.to_kv.weight")]:
        tensors[key] = (tensors[key].double() @ whitening).to(tensors[key].dtype)
    if "audio_time.weight" in tensors:
        time_map = tensors["audio_time.weight"]
        tensors["audio_time.weight"] = torch.linalg.solve(whitening, time_map.double()).to(time_map.dtype).contiguous()
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "af2": "2" if data.get("base_lm") else "1"})
    data["xattn"]["audio_whitening"] = False
    atomic_write_text(cfg_path, json.dumps(data, indent=1))
    return True
