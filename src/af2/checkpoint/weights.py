"""Strict state-dict loading and safetensors reads, shared by every checkpoint layout.

Every load is strict: each missing, unexpected, mis-shaped or inconsistent key is reported with
the file it came from (the official code loads non-strictly and silently drops keys).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from af2.errors import CheckpointError
from af2.model.af2 import EMBEDDING_KEY, LM_HEAD_KEY, AF2Model
from af2.tensorfile import TensorFile


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


def tie_int8_head(model: AF2Model, state: dict[str, torch.Tensor]) -> None:
    """A tied int8 head shares the embedding's table and its scales (only the table is a tied key)."""
    if "lm.lm_head.scale" in model.state_dict() and LM_HEAD_KEY not in state:
        state["lm.lm_head.scale"] = state["lm.model.embed_tokens.scale"]
