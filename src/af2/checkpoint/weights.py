"""Strict state-dict loading and safetensors reads, shared by every checkpoint layout.

Every load is strict: each missing, unexpected, mis-shaped or inconsistent key is reported with
the file it came from (the official code loads non-strictly and silently drops keys).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch

from af2.errors import CheckpointError
from af2.model.af2 import EMBEDDING_KEY, LM_HEAD_KEY, AF2Model
from af2.tensorfile import CHUNK_BYTES, TensorFile

_SLICE = 1 << 20  # values per slice when quantizing a weight: a few MB of temporaries


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
        aliases[LM_HEAD_KEY] = EMBEDDING_KEY
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


def check_finite(state: Mapping[str, torch.Tensor], source: str, strict: bool = False) -> list[str]:
    """Names of tensors holding NaN or Inf: a warning naming them, or a CheckpointError if ``strict``."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not _finite(v)]
    if bad:
        message = (f"{source}: {len(bad)} tensor(s) hold NaN or Inf values, e.g. {', '.join(bad[:5])}; "
                   "the checkpoint is damaged or diverged, answers will be garbage")
        if strict:
            raise CheckpointError(message)
        warnings.warn(message, stacklevel=3)
    return bad


def _finite(t: torch.Tensor) -> bool:
    """Whether ``t`` holds no NaN or Inf, in one read-only pass (min and max propagate NaN).
    ``isfinite(t).all()`` made three temporaries the size of ``t``, 7 bytes a value in fp32:
    0.9 GiB for AF2-0.5B's fp32 embedding, a fifth of the peak of its load."""
    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) & torch.isfinite(high))


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
    """Our ``model.safetensors`` read with ``read_state``, shapes checked against ``expected``
    first (a model made by ``quantize_int8`` gets its weights quantized as they are read)."""
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    weights = TensorFile(path)
    try:
        bad = [f"{k}: file {weights.shape(k)} vs model {tuple(expected[k].shape)}"
               for k in weights.keys() if k in expected and tuple(expected[k].shape) != weights.shape(k)]
        if bad:
            raise CheckpointError(f"{path}: wrong shapes: {bad[:8]}")
        return read_state({k: (weights, k) for k in weights.keys()}, expected, dtype)
    finally:
        weights.close()


class TensorSource(Protocol):
    """Where stored tensors are read from: a ``TensorFile``, the official layout's chunks, ``InMemory``."""

    def shape(self, key: str) -> tuple[int, ...]: ...

    def dtype(self, key: str) -> torch.dtype: ...

    def read_into(self, key: str, out: torch.Tensor, first: int = 0,
                  stage: torch.Tensor | None = None) -> torch.Tensor: ...


class InMemory:
    """Tensors already in memory (e.g. the AF-CLAP checkpoint, memory-mapped) read like a file's:
    copied into the loader's tensors, so the model never holds on to the mapped file."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self.tensors = tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self.tensors[key].dtype

    def read_into(self, key: str, out: torch.Tensor, first: int = 0,
                  stage: torch.Tensor | None = None) -> torch.Tensor:
        t = self.tensors[key]
        begin = first * math.prod(t.shape[1:])
        out.view(-1).copy_(t.reshape(-1)[begin:begin + out.numel()])
        return out


def scale_key(weight_key: str) -> str:
    """The key of an int8 weight's per-row scales (``...weight`` → ``...scale``)."""
    return weight_key.removesuffix("weight") + "scale"


def read_state(plan: Mapping[str, tuple[TensorSource, str]], expected: Mapping[str, torch.Tensor],
               dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The state dict ``{key: stored tensor}`` that ``plan`` names (``key: (source, its name there)``),
    floats in ``dtype`` (None: as stored). A float weight that ``expected`` holds in int8 (a model made
    by ``quantize_int8``) is quantized as it is read, from its values in ``dtype``, a slice of rows at a
    time, and comes with its ``scale``: the float weight never exists whole.

    Every tensor is allocated before the first byte is read. Read in turn, each weight would land
    above the conversion buffers freed before it, and those holes stayed in the heap: 0.26 GiB of a
    bf16 AF2-0.5B load, 0.75 GiB of an int8 one (half its weights). Allocated first, the weights sit
    below every temporary, which are freed on top and given back.
    """
    quantized = {k for k, (src, name) in plan.items()
                 if k in expected and expected[k].dtype == torch.int8 and src.dtype(name).is_floating_point}
    state = {}
    for key, (src, name) in plan.items():
        stored = src.dtype(name)
        if key in quantized:
            state[key] = torch.empty(src.shape(name), dtype=torch.int8)
            state[scale_key(key)] = torch.empty(src.shape(name)[0], dtype=expected[scale_key(key)].dtype)
        else:
            state[key] = torch.empty(src.shape(name), dtype=dtype if dtype is not None and stored.is_floating_point
                                     else stored)
    stage = torch.empty(CHUNK_BYTES, dtype=torch.uint8)  # one conversion buffer for every read
    for key, (src, name) in plan.items():
        if key in quantized:
            _read_quantized(src, name, state[key], state[scale_key(key)], dtype or src.dtype(name), stage)
        else:
            src.read_into(name, state[key], 0, stage)
    return state


def _read_quantized(src: TensorSource, name: str, codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype,
                    stage: torch.Tensor) -> None:
    """Fill ``codes`` and ``scale`` from the float weight ``name``, read as ``dtype`` (as if the model
    were loaded in ``dtype`` and then quantized: both ways give the same model)."""
    from af2.model.quant import quantize_rows

    n, row = codes.shape[0], math.prod(codes.shape[1:])
    rows = max(1, _SLICE // max(row, 1))
    buffer = torch.empty((min(rows, n), *codes.shape[1:]), dtype=dtype)
    for first in range(0, n, rows):
        part = src.read_into(name, buffer[:min(rows, n - first)], first, stage)
        quantize_rows(part, codes[first:first + len(part)], scale[first:first + len(part)])


def tie_int8_head(model: AF2Model, state: dict[str, torch.Tensor]) -> None:
    """A tied int8 head shares the embedding's table and its scales (only the table is a tied key)."""
    if scale_key(LM_HEAD_KEY) in model.state_dict() and LM_HEAD_KEY not in state:
        state[scale_key(LM_HEAD_KEY)] = state[scale_key(EMBEDDING_KEY)]
