"""Loading and saving AF2 weights: NVIDIA's released layout and our own format.

Released layout (spec section 8)::

    DIR/safe_ckpt/metadata.json            keys = chunk names
    DIR/safe_ckpt/<chunk>.safetensors      the Flamingo state dict (alias keys included)
    DIR/clap_ckpt/epoch_*.pt               AF-CLAP two-tower checkpoint (torch pickle)

Our format: ``config.json`` (the AF2Config) + ``model.safetensors`` + the tokenizer files. A folder
whose ``config.json`` names a ``base_lm`` holds only what is not the base LM's: the audio tower, the
audio transformer, the cross-attention blocks and the embedding rows added for AF2's special tokens
(``extra_rows.<key>``); the frozen LM is read from the base LM (``af2.base_lm``) when loading. Every
training checkpoint is such a folder, so ``af2.load(run_dir)`` answers with it.

Every load is strict: each missing, unexpected, mis-shaped or inconsistent key is reported with
the file it came from. The official code loads non-strictly and silently drops keys.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from af2.errors import CheckpointError, ConfigError  # noqa: F401  (CheckpointError is re-exported)
from af2.config import AF2Config, check_sizes, config_from_dict, config_to_dict
from af2.jsonl import atomic_path, atomic_write_text, read_json
from af2.model.af2 import AF2Model
from af2.model.htsat import OFFICIAL_CLAP_PREFIX as CLAP_PREFIX, clap_state_dict_from_official
from af2.tensorfile import TensorFile


# Official Flamingo key prefix → ours. Both CLAP namings exist: the HF inference code calls the
# tower `nvclap`, the training code `afclap`.
_PREFIXES = (
    ("clap.nvclap.", "audio_encoder."),
    ("clap.afclap.", "audio_encoder."),
    ("audio_transformer_clap.", "audio_transformer."),
    ("lang_encoder.model.layers.", "lm.model.layers."),
    ("lang_encoder.", "lm."),
)
_LAYER_PART = re.compile(r"^lm\.model\.layers\.(\d+)\.gated_cross_attn_layer_sound\.")
# Second registrations of the same tensors in the official module; they must equal the primary.
_ALIASES = (
    (re.compile(r"^lang_encoder\.old_decoder_blocks\.(\d+)\."), r"lang_encoder.model.layers.\1.decoder_layer."),
    (re.compile(r"^lang_encoder\.gated_cross_attn_layers_sound\.(\d+)\."),
     r"lang_encoder.model.layers.\1.gated_cross_attn_layer_sound."),
)
_TIED = ("lang_encoder.lm_head.weight", "lang_encoder.model.embed_tokens.weight")
# A chunk name in metadata.json: a plain file stem inside safe_ckpt/, never a path.
_CHUNK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")
_DOWNLOAD = "hf download nvidia/audio-flamingo-2-0.5B --local-dir DIR"


def official_to_ours(key: str) -> str:
    """Map one primary (non-alias) official key to our module's name for it."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    else:
        raise KeyError(key)
    return _LAYER_PART.sub(r"lm.model.layers.\1.xattn.", key)


def ours_to_official(key: str) -> str:
    """Inverse of ``official_to_ours`` (HTSAT keys use the HF code's `clap.nvclap.` naming)."""
    key = re.sub(r"^lm\.model\.layers\.(\d+)\.xattn\.", r"lm.model.layers.\1.gated_cross_attn_layer_sound.", key)
    for new, old in (("audio_encoder.", "clap.nvclap."), ("audio_transformer.", "audio_transformer_clap."),
                     ("lm.", "lang_encoder.")):
        if key.startswith(new):
            return old + key[len(new):]
    raise KeyError(key)


def alias_target(key: str) -> str | None:
    """The primary key an official alias key duplicates, or None if ``key`` is primary."""
    for pattern, repl in _ALIASES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return _TIED[1] if key == _TIED[0] else None


def read_official_chunks(ckpt_dir: str | Path, dtype: torch.dtype | None = None) -> LazyChunks:
    """Merge every chunk listed by ``safe_ckpt/metadata.json`` into one (lazy) state dict whose
    floating-point tensors come out in ``dtype`` (default: as stored)."""
    safe = Path(ckpt_dir) / "safe_ckpt"
    meta_path = safe / "metadata.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: not found; an official AF2 checkpoint folder holds safe_ckpt/metadata.json "
                              f"(download it with `{_DOWNLOAD}`)")
    meta = read_json(meta_path, CheckpointError, max_bytes=1 << 20)
    if not isinstance(meta, dict) or not meta:
        raise CheckpointError(f"{meta_path}: expected a non-empty JSON object whose keys are chunk names")
    bad = [name for name in meta if not _CHUNK_NAME.fullmatch(name) or ".." in name]
    if bad:
        raise CheckpointError(f"{meta_path}: chunk name {bad[0][:80]!r} is not a file name inside safe_ckpt/; "
                              "refusing to read outside the checkpoint folder (re-download the checkpoint)")
    return LazyChunks([safe / f"{chunk}.safetensors" for chunk in meta], meta_path, dtype)


class LazyChunks(Mapping):
    """The merged state dict of safetensors chunks, each tensor read only when asked for.

    Released chunks hold every decoder key twice over (alias registrations) in fp32: reading all
    of them would double the memory a load needs (7.2 GB for AF2-0.5B instead of 4.3 GB). Aliases
    are compared with their primary on disk (``same_bytes``), and each tensor is read straight
    into ``dtype``.
    """

    def __init__(self, paths: list[Path], listed_in: Path, dtype: torch.dtype | None = None):
        self._where: dict[str, TensorFile] = {}
        self.dtype = dtype
        for path in paths:
            if not path.is_file():
                raise CheckpointError(f"{path}: chunk {path.stem!r} listed in {listed_in.name} is missing; "
                                      "re-download it")
            handle = TensorFile(path)
            overlap = self._where.keys() & set(handle.keys())
            if overlap:
                raise CheckpointError(f"{path}: keys also present in an earlier chunk: {sorted(overlap)[:5]}")
            self._where.update(dict.fromkeys(handle.keys(), handle))

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key].read(key, self.dtype)

    def shape(self, key: str) -> tuple[int, ...]:
        """A tensor's shape from the file header, without reading the tensor."""
        return self._where[key].shape(key)

    def same_bytes(self, key: str, other: str) -> bool:
        return self._where[key].same_bytes(key, self._where[other], other)

    def rows(self, key: str) -> Callable[[int, int, torch.dtype | None], torch.Tensor]:
        """``read(first, stop, dtype)``: rows of tensor ``key``."""
        return lambda first, stop, dtype: self._where[key].read_rows(key, first, stop, dtype)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        for handle in set(self._where.values()):
            handle.close()


def _same_tensor(state: Mapping[str, torch.Tensor], key: str, other: str) -> bool:
    """Whether ``state[key]`` equals ``state[other]``, on disk when ``state`` can (LazyChunks)."""
    if isinstance(state, LazyChunks):
        return state.same_bytes(key, other)
    return state[key].shape == state[other].shape and torch.equal(state[key], state[other])


def read_official_clap(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], Path] | None:
    """The HTSAT weights of ``clap_ckpt/epoch_*.pt`` (latest epoch), read with weights_only=True."""
    files = sorted((Path(ckpt_dir) / "clap_ckpt").glob("epoch_*.pt"),
                   key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not files:
        return None
    path = files[-1]
    with open(path, "rb") as f:
        first = f.read(1)
    if not zipfile.is_zipfile(path) and first != b"\x80":  # a torch zip archive or a pickle
        raise CheckpointError(f"{path}: not a torch checkpoint ({path.stat().st_size} bytes, neither a torch zip "
                              "archive nor a legacy torch pickle); re-download clap_ckpt/")
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to unpickle: it holds objects other than tensors and plain "
                              f"containers, which could run code ({str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: unreadable torch checkpoint ({str(exc).splitlines()[0][:200]}); "
                              "re-download clap_ckpt/") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path}: expected a dict with a 'state_dict' entry (an AF-CLAP training checkpoint)")
    kept, _ignored = clap_state_dict_from_official(obj["state_dict"])
    return kept, path


def _torch_load(path: Path):
    """``torch.load`` of tensors and plain containers only; memory-mapped when the file allows it,
    so that the parts of the AF-CLAP checkpoint af2 does not use (the text tower) are never read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # only the legacy (non-zip) format cannot be mapped
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def convert_official_state_dict(official: Mapping[str, torch.Tensor], model: AF2Model, *, source: str,
                                clap: dict[str, torch.Tensor] | None = None,
                                clap_source: str = "clap_ckpt") -> dict[str, torch.Tensor]:
    """Map an official Flamingo state dict onto ``model``'s keys, strictly.

    Alias keys must equal their primary; HTSAT keys absent from the Flamingo dict are taken from
    ``clap`` (the official load order: CLAP checkpoint first, Flamingo chunks win). Raises
    CheckpointError listing every missing, unexpected or mis-shaped key.
    """
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unexpected, mismatched, alias_errors = [], [], []
    for key in official:  # by key: an alias is compared, never read whole
        target = alias_target(key)
        if target is not None:
            if target not in official:
                unexpected.append(f"{key} (alias of absent {target})")
            elif not _same_tensor(official, key, target):
                alias_errors.append(f"{key} differs from {target}")
            continue
        try:
            ours = official_to_ours(key)
        except KeyError:
            unexpected.append(key)
            continue
        shape = tuple(official.shape(key) if isinstance(official, LazyChunks) else official[key].shape)
        if ours not in expected:
            unexpected.append(key)
        elif tuple(expected[ours].shape) != shape:
            mismatched.append(f"{key}: file {shape} vs model {tuple(expected[ours].shape)}")
        elif expected[ours].dtype == torch.int8 and isinstance(official, LazyChunks):  # a quantize_int8 model
            out[ours], out[ours.removesuffix("weight") + "scale"] = read_quantized(official.rows(key), shape,
                                                                                    official.dtype)
        else:
            out[ours] = official[key]
    for key, value in (clap or {}).items():
        ours = "audio_encoder." + key
        if ours in out:
            continue
        if ours not in expected:
            unexpected.append(f"{clap_source}:{CLAP_PREFIX}{key}")
        elif expected[ours].shape != value.shape:
            mismatched.append(f"{clap_source}:{key}: file {tuple(value.shape)} vs model {tuple(expected[ours].shape)}")
        else:
            out[ours] = value
    tied = tied_aliases(model)
    missing = [k for k in expected if k not in out and k not in tied
               and k.removesuffix("scale") + "weight" not in tied]  # a tied int8 head's scales
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched),
                        ("inconsistent alias", alias_errors)):
        if keys:
            problems.append(f"{len(keys)} {label}: " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
    if problems:
        raise CheckpointError(f"{source}: does not match the model: " + "; ".join(problems) + ". If it is not the "
                              "released architecture, pass --config with its sizes (htsat.embed_dim, htsat.depths, "
                              "audio_transformer.*, xattn.*)")
    return out


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """``{alias: primary}`` for parameters registered under several names (the tied LM head)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    lm_config = getattr(getattr(model, "lm", None), "config", None)
    if lm_config is not None and lm_config.tie_word_embeddings:  # also before tying, e.g. on the meta device
        aliases["lm.lm_head.weight"] = "lm.model.embed_tokens.weight"
    return aliases


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                           assign: bool = False) -> None:
    """``load_state_dict(strict=True)``; tied keys are filled from their primary; errors name the source.

    ``assign=True`` adopts the given tensors (for a model built on the meta device), re-ties the
    LM head to the embedding and rebuilds buffers that no checkpoint stores (rotary frequencies).
    """
    state = dict(state)
    tied = tied_aliases(model)
    for key, primary in tied.items():
        if key not in state and primary in state:
            state[key] = state[primary]
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    if assign:
        lm = getattr(model, "lm", None)
        if lm is not None and lm.config.tie_word_embeddings:
            lm.lm_head.weight = lm.model.embed_tokens.weight
        _rebuild_unsaved_buffers(model, source)


def _rebuild_unsaved_buffers(model: torch.nn.Module, source: str) -> None:
    """Non-persistent buffers (e.g. an HF rotary embedding's inv_freq) are still on the meta
    device after an assign-load: rebuild their modules from their config."""
    for name, module in list(model.named_modules()):
        if not any(b.is_meta for b in module.buffers(recurse=False)):
            continue
        if not hasattr(module, "config"):
            raise CheckpointError(f"{source}: buffer of {name} is not in the checkpoint and cannot be rebuilt")
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, type(module)(config=module.config))
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{source}: no values for {left[:8]}")


# --------------------------------------------------------------------------------------------
# our format


EMBEDDING_KEY = "lm.model.embed_tokens.weight"
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
    return out


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


def check_finite(state: Mapping[str, torch.Tensor], source: str, strict: bool = False) -> list[str]:
    """Names of tensors holding NaN or Inf: a warning naming them, or a CheckpointError if ``strict``."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        message = (f"{source}: {len(bad)} tensor(s) hold NaN or Inf values, e.g. {', '.join(bad[:5])}; "
                   "the checkpoint is damaged or diverged, answers will be garbage")
        if strict:
            raise CheckpointError(message)
        warnings.warn(message, stacklevel=3)
    return bad


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, as stored; damaged files are CheckpointErrors."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    weights = TensorFile(path)
    try:
        return {k: weights.read(k) for k in weights.keys()}
    finally:
        weights.close()


def read_weights(model_dir: str | Path, expected: Mapping[str, torch.Tensor],
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our ``model.safetensors``, tensor by tensor, floats in ``dtype``; shapes checked against
    ``expected``. A float weight that ``expected`` holds in int8 (a model made by
    ``quantize_int8``) is quantized as it is read, a slice of rows at a time, with its ``scale``."""
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    weights = TensorFile(path)
    try:
        bad = [f"{k}: file {weights.shape(k)} vs model {tuple(expected[k].shape)}"
               for k in weights.keys() if k in expected and tuple(expected[k].shape) != weights.shape(k)]
        if bad:
            raise CheckpointError(f"{path}: wrong shapes: {bad[:8]}")
        state = {}
        for k in weights.keys():
            if k in expected and expected[k].dtype == torch.int8 and weights.is_float(k):
                state[k], state[k.removesuffix("weight") + "scale"] = read_quantized(
                    lambda a, b, d, k=k: weights.read_rows(k, a, b, d), weights.shape(k), dtype)
            else:
                state[k] = weights.read(k, dtype)
        return state
    finally:
        weights.close()


def read_quantized(read: Callable[[int, int, torch.dtype | None], torch.Tensor], shape: tuple[int, ...],
                   dtype: torch.dtype | None, rows: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 codes and scales of a float weight of ``shape`` read ``rows`` rows at a time, from its
    values in ``dtype`` (as if the model were loaded in ``dtype`` and then quantized: both ways
    give the same model), so the float weight never exists whole."""
    from af2.model.quant import quantize_rows

    codes = torch.empty(shape, dtype=torch.int8)
    scale = torch.empty(shape[0], dtype=torch.bfloat16)
    for first in range(0, shape[0], rows):
        codes[first:first + rows], scale[first:first + rows] = quantize_rows(read(first, first + rows, dtype))
    return codes, scale


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


def _tie_int8_head(model: AF2Model, state: dict[str, torch.Tensor]) -> None:
    """A tied int8 head shares the embedding's table and its scales (only the table is a tied key)."""
    if "lm.lm_head.scale" in model.state_dict() and "lm.lm_head.weight" not in state:
        state["lm.lm_head.scale"] = state["lm.model.embed_tokens.scale"]


def load_pretrained(model_dir: str | Path, dtype: torch.dtype = torch.float32, int8: bool = False,
                    strict: bool = False) -> AF2Model:
    """Build the model of an af2 folder (``config.json`` + ``model.safetensors``) in ``dtype``
    without a second copy: the model is made on the meta device and adopts the tensors read.
    ``int8``: the LM's linear weights are quantized as they are read (see ``af2.model.quant``),
    so the float weights never exist whole. A folder that names its base LM (``BaseRef``) is
    built from that base LM first, loaded, then cast (and quantized). NaN/Inf weights warn
    (``strict``: raise)."""
    from af2.model.quant import quantize_int8

    cfg, base = read_model_folder_config(model_dir)
    if base is not None:
        return _load_on_base(model_dir, cfg, base, dtype, int8, strict)
    with torch.device("meta"):
        model = AF2Model(cfg).to(dtype)
        if int8:
            quantize_int8(model.lm)
    source = str(Path(model_dir) / "model.safetensors")
    state = read_weights(model_dir, model.state_dict(), dtype)
    check_finite(state, source, strict)
    _tie_int8_head(model, state)
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
        quantize_int8(model.lm)
    return model.eval()


# --------------------------------------------------------------------------------------------
# official layout → model


def load_tokenizer(path: str | Path):
    """A base tokenizer from a local folder or a hub id (offline when HF_HUB_OFFLINE=1)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # tokenizers/transformers raise many types (even bare Exception) for bad files
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"cannot load the tokenizer from {path!s} ({first}). Point --base-lm at a local "
            "Qwen2.5 folder (config.json + tokenizer files) or download it: "
            "`hf download Qwen/Qwen2.5-0.5B --local-dir DIR`") from exc


def read_lm_config(path: str | Path) -> dict:
    """The base LM's HF config dict, from a config.json file, a folder holding one, or a hub id."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        data = read_json(p, CheckpointError, max_bytes=1 << 24)
        if not isinstance(data, dict):
            raise CheckpointError(f"{p}: expected the base LM's config as a JSON object, got {type(data).__name__}")
        return data
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path)).to_dict()
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot find the base LM config at {path!s} ({str(exc).splitlines()[0]}); pass a local folder "
            "holding the Qwen2.5 config.json, or download it with `hf download Qwen/Qwen2.5-0.5B`") from exc


def official_lm_width(ckpt_dir: str | Path) -> int:
    """The base LM's hidden size, read from the shape of the embedding in ``safe_ckpt/`` (no tensor is read)."""
    chunks = read_official_chunks(ckpt_dir)
    key = _TIED[1]
    if key not in chunks:
        raise CheckpointError(f"{Path(ckpt_dir) / 'safe_ckpt'}: no {key}; cannot tell which base LM it was trained on, "
                              "pass --base-lm")
    return chunks.shape(key)[-1]


def official_config(ckpt_dir: str | Path, base_lm: str | Path | None, vocab_size: int,
                    base: AF2Config | None = None) -> AF2Config:
    """AF2Config for an official checkpoint: released architecture + the base LM's config."""
    import dataclasses

    ckpt = Path(ckpt_dir)
    source = ckpt / "lm_config.json" if (ckpt / "lm_config.json").is_file() else base_lm
    if source is None:
        raise CheckpointError(f"{ckpt}: no lm_config.json inside; pass the base LM (e.g. --base-lm Qwen/Qwen2.5-0.5B "
                              "or a local folder) so its config and tokenizer can be read")
    lm = {k: v for k, v in read_lm_config(source).items() if not k.startswith("_") and k not in
          ("torch_dtype", "dtype", "transformers_version", "use_cache")}
    cfg = dataclasses.replace(base or AF2Config(), lm=lm, vocab_size=vocab_size)
    try:
        check_sizes(cfg, str(source if source != base_lm else f"base LM {base_lm}"))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return cfg


def load_official(ckpt_dir: str | Path, *, base_lm: str | Path | None = None, cfg: AF2Config | None = None,
                  dtype: torch.dtype = torch.float32, int8: bool = False, strict: bool = False):
    """Build an AF2 model from NVIDIA's released layout; return (model, tokenizer, SpecialTokens).

    ``base_lm``: the Qwen2.5 base (local folder or hub id) for its config and tokenizer when the
    checkpoint folder has no ``lm_config.json`` / ``tokenizer/``. ``cfg`` (optional) gives the
    architecture (window limits, head counts...); every audio-side size the tensor shapes determine
    is read from them. Its ``lm``/``vocab_size`` are filled here.
    """
    from af2.official_shapes import infer_official_config
    from af2.tokens import add_special_tokens

    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: not a folder; expected an official AF2 checkpoint folder (safe_ckpt/, clap_ckpt/)")
    tok_source = ckpt / "tokenizer" if (ckpt / "tokenizer").is_dir() else base_lm
    if tok_source is None:
        raise CheckpointError(f"{ckpt}: no tokenizer/ inside; pass the base LM (--base-lm) for its tokenizer")
    tokenizer = load_tokenizer(tok_source)
    special = add_special_tokens(tokenizer, (cfg or AF2Config()).tokens)
    official = read_official_chunks(ckpt)
    try:
        shapes = {k: official.shape(k) for k in official}
    finally:
        official.close()
    clap = read_official_clap(ckpt)
    shapes.update({k: tuple(v.shape) for k, v in (clap[0] if clap else {}).items() if k not in shapes})
    cfg = infer_official_config(shapes, cfg or AF2Config(), str(ckpt))
    cfg = official_config(ckpt, base_lm, len(tokenizer), cfg)
    return build_official(ckpt, cfg, dtype, int8, strict), tokenizer, special


def build_official(ckpt_dir: str | Path, cfg: AF2Config, dtype: torch.dtype = torch.float32,
                   int8: bool = False, strict: bool = False) -> AF2Model:
    """The model of an official checkpoint folder for a complete ``cfg`` (LM and vocabulary
    filled), in ``dtype``, holding one copy of the weights: built on the meta device, it adopts
    each tensor as read (aliases are compared on disk, never loaded). ``int8``: the LM's linear
    weights are quantized as they are read (``af2.model.quant``). NaN/Inf weights warn
    (``strict``: raise)."""
    from af2.model.quant import quantize_int8

    ckpt = Path(ckpt_dir)
    official = read_official_chunks(ckpt, dtype)
    clap = read_official_clap(ckpt)  # memory-mapped: only the tensors used below are read
    with torch.device("meta"):  # no random init, no second copy: the checkpoint's tensors are adopted
        model = AF2Model(cfg).to(dtype)
        if int8:
            quantize_int8(model.lm)
    try:
        state = convert_official_state_dict(official, model, source=str(ckpt / "safe_ckpt"),
                                            clap=clap[0] if clap else None, clap_source=str(clap[1]) if clap else "")
    finally:
        official.close()
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}  # CLAP's, read as stored
    check_finite(state, str(ckpt), strict)
    _tie_int8_head(model, state)
    load_state_dict_strict(model, state, str(ckpt), assign=True)
    return model.to(dtype).eval()


MODEL_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt")


def export_model_folder(source: str | Path, out_dir: str | Path) -> Path:
    """Copy the model files of a run's newest checkpoint (or of a checkpoint / model folder) to ``out_dir``."""
    import shutil

    from af2.inference import resolve_model_dir

    folder = resolve_model_dir(source)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: not a model folder (config.json + model.safetensors)")
    read_model_folder_config(folder)  # fails loudly on a damaged config before anything is copied
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FOLDER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    return out
