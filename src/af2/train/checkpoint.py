"""Checkpoints: written atomically, complete enough to continue a run exactly.

Layout of ``<output_dir>/checkpoints/step_00000100/``:
  model.safetensors  the whole model, LoRA-free key names (loads into a fresh ``AF2Model``)
  lora.safetensors   the adapters alone, when LoRA is on
  trainer.pt         optimizer, scheduler, step, data position, counters, RNG state of every rank
  config.yaml        the resolved ``TrainConfig``
Everything is written into a temporary directory that is then renamed (``os.replace``) into place,
and ``checkpoints/latest`` (also replaced atomically) names the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from af2.errors import CheckpointError
from af2.jsonl import atomic_path, atomic_write_text
from af2.train.distributed import DistInfo, barrier, gather_objects, unwrap
from af2.train.lora import join_lora_state, split_lora_state
from af2.checkpoint.folder import expand_saved_state, read_model_folder_config
from af2.checkpoint.weights import load_state_dict_strict, tied_aliases
from af2.train.sampler import Position

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_weights(state: dict[str, torch.Tensor], path: Path, aliases: dict[str, str] | None = None) -> None:
    """A safetensors file of ``state`` without tied aliases, written atomically."""
    aliases = aliases or {}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in aliases}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_weights(model: nn.Module, path: str | Path, new_params: tuple[str, ...] = ()) -> None:
    """Load a file written by ``save_weights`` (or a checkpoint / model folder, or a run directory) into
    ``model``, strictly; a model folder's left-out base LM tensors are taken from ``model``. Parameters whose
    names start with one of ``new_params`` may be absent from the file: they keep the model's values."""
    path = resolve_weights(path)
    state = load_file(str(path))
    if (path.parent / "config.json").is_file():
        state = expand_saved_state(model, state, str(path), read_model_folder_config(path.parent)[1])
    if new_params:
        current = model.state_dict()
        kept = [name for name in current if name not in state and name.startswith(tuple(new_params))]
        if kept:
            print(f"{path}: {len(kept)} new parameter(s) not in the checkpoint keep their initialisation: "
                  f"{', '.join(kept[:4])}{' ...' if len(kept) > 4 else ''}", flush=True)
            state.update({name: current[name] for name in kept})
    load_state_dict_strict(model, state, str(path))


def resolve_weights(path: str | Path) -> Path:
    """``model.safetensors`` itself, or the one inside a checkpoint directory or a run directory."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        path = (latest if latest is not None else path) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}; pass a model.safetensors or a checkpoint directory")
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory (or its ``checkpoints/`` folder)."""
    run_dir = Path(run_dir)
    for folder in (run_dir / "checkpoints", run_dir):
        pointer = folder / "latest"
        if pointer.is_file():
            return folder / pointer.read_text().strip()
    return None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, position: Position, counters: dict[str, int], config_yaml: str,
                    info: DistInfo, export: Callable[[dict[str, torch.Tensor], Path], None] | None = None,
                    save_model: Callable[[dict[str, torch.Tensor], Path], None] | None = None,
                    keep_last: int = 0) -> Path:
    """Collective: every rank must call it. Returns the checkpoint directory.

    ``save_model`` (the task's) writes the weights as a model folder that ``af2.load`` accepts;
    without it the full state goes to ``model.safetensors``. ``keep_last`` > 0 prunes older ones."""
    model_state, optim_state = get_state_dict(model, optimizer, options=_FULL)
    rngs = gather_objects(rng_state(), info)
    final = run_dir / "checkpoints" / f"step_{step:08d}"
    if info.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        plain, adapters = split_lora_state(model_state)
        if save_model is not None:
            save_model(plain, tmp)
        else:
            save_weights(plain, tmp / "model.safetensors", tied_aliases(unwrap(model)))
        if adapters:
            save_weights(adapters, tmp / "lora.safetensors")
        torch.save({"step": step, "position": dataclasses.asdict(position), "optimizer": optim_state,
                    "scheduler": scheduler.state_dict(), "counters": dict(counters), "rng": rngs,
                    "world_size": info.world_size}, tmp / "trainer.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        if export is not None:
            export(plain, tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(final.parent / "latest", final.name)
        if keep_last > 0:
            for old in sorted(final.parent.glob("step_*"))[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def _check_optimizer_names(ckpt: Path, model: nn.Module, optim_state: dict[str, Any]) -> None:
    """Every saved AdamW state belongs to a tensor this stage trains (a different trainable set is a
    different stage: start it with init_checkpoint rather than --resume)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    unexpected = sorted(set(optim_state.get("state", {})) - trainable)
    if unexpected:
        raise CheckpointError(f"{ckpt}: optimizer state for {len(unexpected)} tensor(s) this stage does not train "
                              f"(first: {unexpected[0]}); the trainable set changed, so start from the "
                              "checkpoint with init_checkpoint instead of --resume")


def load_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    info: DistInfo) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; returns the trainer record (step, position, ...)."""
    plain = load_file(str(ckpt / "model.safetensors"))
    adapters = load_file(str(ckpt / "lora.safetensors")) if (ckpt / "lora.safetensors").is_file() else {}
    bare = unwrap(model)
    if (ckpt / "config.json").is_file():  # a model folder: the base LM's tensors are already in the model
        plain = expand_saved_state(bare, plain, str(ckpt), read_model_folder_config(ckpt)[1])
    state = join_lora_state(bare, plain, adapters)
    for alias, canonical in tied_aliases(bare).items():
        state.setdefault(alias, state[canonical])
    trainer = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))
    _check_optimizer_names(ckpt, bare, trainer["optimizer"])
    # Not strict: a trainable tensor that never received a gradient (HTSAT's classification heads, which
    # the forward never computes) has no AdamW state when saved, and so none after the resume either.
    set_optimizer_state_dict(model, optimizer, trainer["optimizer"],
                             options=StateDictOptions(full_state_dict=True, strict=False))
    scheduler.load_state_dict(trainer["scheduler"])
    rngs = trainer["rng"]
    if len(rngs) != info.world_size:
        raise CheckpointError(f"{ckpt}: saved by {len(rngs)} ranks, resumed with {info.world_size}; an exact "
                         "resume needs the same number of ranks (load the weights with init_checkpoint instead)")
    set_rng_state(rngs[info.rank])
    trainer["position"] = Position(**trainer["position"])
    return trainer
