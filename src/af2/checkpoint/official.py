"""NVIDIA's released layout (spec section 8) -> an AF2Model, strictly::

    DIR/safe_ckpt/metadata.json            keys = chunk names
    DIR/safe_ckpt/<chunk>.safetensors      the Flamingo state dict (alias keys included)
    DIR/clap_ckpt/epoch_*.pt               AF-CLAP two-tower checkpoint (torch pickle)

The LM's config and tokenizer come from ``lm_config.json`` / ``tokenizer/`` inside the folder or
from the base LM named with ``base_lm``.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from af2.base_lm import load_tokenizer, read_lm_config
from af2.checkpoint.weights import (InMemory, TensorSource, check_finite, load_state_dict_strict, read_state, scale_key,
                                    tie_int8_head, tied_aliases)
from af2.config import AF2Config, check_sizes
from af2.errors import CheckpointError, ConfigError
from af2.jsonl import read_json
from af2.model.af2 import AF2Model
from af2.model.htsat import OFFICIAL_CLAP_PREFIX as CLAP_PREFIX, clap_state_dict_from_official
from af2.registry import RELEASED_BASES
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


def read_official_chunks(ckpt_dir: str | Path) -> LazyChunks:
    """Merge every chunk listed by ``safe_ckpt/metadata.json`` into one (lazy) state dict."""
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
    return LazyChunks([safe / f"{chunk}.safetensors" for chunk in meta], meta_path)


class LazyChunks(Mapping):
    """The merged state dict of safetensors chunks, each tensor read only when asked for.

    Released chunks hold every decoder key twice over (alias registrations) in fp32: reading all
    of them would double the memory a load needs (7.2 GB for AF2-0.5B instead of 4.3 GB). Aliases
    are compared with their primary on disk (``same_bytes``); a loader reads each tensor straight
    into its own (``read_into``, a ``TensorSource``). Membership and shapes come from the files'
    headers, never from a read.
    """

    def __init__(self, paths: list[Path], listed_in: Path):
        self._where: dict[str, TensorFile] = {}
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
        return self._where[key].read(key)

    def __contains__(self, key: object) -> bool:  # Mapping's own would read the tensor (0.5 GB for the embedding)
        return key in self._where

    def shape(self, key: str) -> tuple[int, ...]:
        """A tensor's shape from the file header, without reading the tensor."""
        return self._where[key].shape(key)

    def dtype(self, key: str) -> torch.dtype:
        return self._where[key].dtype(key)

    def read_into(self, key: str, out: torch.Tensor, first: int = 0,
                  stage: torch.Tensor | None = None) -> torch.Tensor:
        return self._where[key].read_into(key, out, first, stage)

    def same_bytes(self, key: str, other: str) -> bool:
        return self._where[key].same_bytes(key, self._where[other], other)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        for handle in set(self._where.values()):
            handle.close()


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


def convert_official_state_dict(official: LazyChunks, model: AF2Model, *, source: str,
                                clap: Mapping[str, torch.Tensor] | None = None, clap_source: str = "clap_ckpt",
                                dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Map the official Flamingo chunks onto ``model``'s keys, strictly, and read them (``read_state``:
    floats in ``dtype``, None: as stored; quantized where ``model`` holds int8).

    Alias keys must equal their primary; HTSAT keys absent from the Flamingo dict are taken from
    ``clap`` (the official load order: CLAP checkpoint first, Flamingo chunks win). Raises
    CheckpointError listing every missing, unexpected or mis-shaped key, before any tensor is read.
    """
    expected = model.state_dict()
    plan: dict[str, tuple[TensorSource, str]] = {}
    unexpected, mismatched, alias_errors = [], [], []
    for key in official:  # by key: an alias is compared on disk, never read whole
        target = alias_target(key)
        if target is not None:
            if target not in official:
                unexpected.append(f"{key} (alias of absent {target})")
            elif not official.same_bytes(key, target):
                alias_errors.append(f"{key} differs from {target}")
            continue
        try:
            ours = official_to_ours(key)
        except KeyError:
            unexpected.append(key)
            continue
        if ours not in expected:
            unexpected.append(key)
        elif tuple(expected[ours].shape) != official.shape(key):
            mismatched.append(f"{key}: file {official.shape(key)} vs model {tuple(expected[ours].shape)}")
        else:
            plan[ours] = (official, key)
    in_clap = InMemory(clap or {})
    for key, value in (clap or {}).items():
        ours = "audio_encoder." + key
        if ours in plan:
            continue
        if ours not in expected:
            unexpected.append(f"{clap_source}:{CLAP_PREFIX}{key}")
        elif expected[ours].shape != value.shape:
            mismatched.append(f"{clap_source}:{key}: file {tuple(value.shape)} vs model {tuple(expected[ours].shape)}")
        else:
            plan[ours] = (in_clap, key)
    tied = tied_aliases(model)
    scales = {scale_key(k) for k in [*plan, *tied] if k in expected and expected[k].dtype == torch.int8}
    missing = [k for k in expected if k not in plan and k not in tied and k not in scales]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched),
                        ("inconsistent alias", alias_errors)):
        if keys:
            problems.append(f"{len(keys)} {label}: " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
    if problems:
        raise CheckpointError(f"{source}: does not match the model: " + "; ".join(problems) + ". If it is not the "
                              "released architecture, pass --config with its sizes (htsat.embed_dim, htsat.depths, "
                              "audio_transformer.*, xattn.*)")
    return read_state(plan, expected, dtype)


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
    each tensor as read (aliases are compared on disk, never loaded). ``int8``: the linear
    weights are quantized as they are read (``af2.model.quant``). NaN/Inf weights warn
    (``strict``: raise)."""
    from af2.model.quant import quantize_int8

    ckpt = Path(ckpt_dir)
    official = read_official_chunks(ckpt)
    clap = read_official_clap(ckpt)  # memory-mapped: only the tensors used below are read, and copied
    with torch.device("meta"):  # no random init, no second copy: the checkpoint's tensors are adopted
        model = AF2Model(cfg).to(dtype)
        if int8:
            quantize_int8(model)
    try:
        state = convert_official_state_dict(official, model, source=str(ckpt / "safe_ckpt"), dtype=dtype,
                                            clap=clap[0] if clap else None, clap_source=str(clap[1]) if clap else "")
    finally:
        official.close()
    check_finite(state, str(ckpt), strict)
    tie_int8_head(model, state)
    load_state_dict_strict(model, state, str(ckpt), assign=True)
    return model.to(dtype).eval()


def official_base_lm(folder: Path) -> str:
    """The Qwen2.5 base of an official checkpoint, from its embedding width (not from the folder's
    name, which users choose); logged so the choice is visible."""
    from af2.config import qwen25_lm_config

    width = official_lm_width(folder)
    size = next((s for s in RELEASED_BASES if qwen25_lm_config(s.lower())["hidden_size"] == width), None)
    if size is None:
        raise CheckpointError(f"{folder}: its LM is {width} wide, which is no Qwen2.5 base AF2 was released with "
                              f"({', '.join(RELEASED_BASES.values())}); pass --base-lm")
    logging.getLogger("af2").info("%s: base LM %s (hidden size %d read from the checkpoint)", folder,
                                  RELEASED_BASES[size], width)
    return RELEASED_BASES[size]
