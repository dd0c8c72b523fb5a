"""One ``train()`` for every stage: gradient accumulation, one global-norm clip per optimizer step,
DDP/FSDP2, bf16 autocast, atomic checkpoints and an exact ``resume``.

A ``Task`` says what to train on: a model, an indexable dataset, a collate function and a loss.
``af2.train.run`` builds the task of each stage from its ``TrainConfig``; tests pass toy tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from af2.errors import CheckpointError, ConfigError
from af2.model.af2 import EMBEDDING_KEY
from af2.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from af2.train.config import TrainConfig, dump_train_config
from af2.train.distributed import (DistInfo, init_distributed, mean_across_ranks, no_grad_sync, sum_across_ranks,
                                   wrap_model)
from af2.train.metrics import MetricsLog, plot_loss
from af2.train.sampler import BatchPlan, Position
from af2.train.schedule import make_scheduler
from af2.train.stages import GROUP_PATTERNS, train_mode


@dataclass
class Task:
    model: nn.Module  # stage already applied (requires_grad says what trains)
    dataset: Sequence[Any]  # dataset[i] returns a sample or raises for a broken one
    collate: Callable[[list[Any]], dict[str, Any]]
    loss: Callable[[nn.Module, dict[str, Any]], torch.Tensor]  # mean loss of one micro-batch
    lengths: Sequence[tuple[int, ...]] | None = None  # per sample, for length-bucketed batching
    export: Callable[[dict[str, torch.Tensor], Path], None] | None = None  # extra files per checkpoint
    # writes a checkpoint's weights as a model folder (config.json + weights + tokenizer) af2.load accepts
    save_model: Callable[[dict[str, torch.Tensor], Path], None] | None = None
    tokenizer: Any = None  # for the listening check
    # evaluation run every cfg.listen.interval steps and at the end: step -> figures to log
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    # Edits the accumulated gradients before clipping (e.g. the embedding-row mask, af2.train.alm).
    grad_mask: Callable[[nn.Module], None] | None = None


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float]  # per optimizer step run by this call (all ranks averaged)
    checkpoint: Path | None
    skipped: int


def train(cfg: TrainConfig, task: Task, info: DistInfo | None = None,
          callbacks: Sequence[Callable[[int, dict[str, Any]], None]] = ()) -> TrainResult:
    info = info or init_distributed(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + info.rank)  # dropout etc. differ per rank; weights come from the task

    model = task.model.to(info.device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"stage {cfg.stage}: no trainable parameters; check `trainable`")
    model = wrap_model(model, info, cfg.strategy)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(optimizer, cfg.optim, cfg.max_steps)
    plan = BatchPlan(len(task.dataset), cfg.batch_size, info.world_size, cfg.seed,
                     lengths=task.lengths if cfg.data.bucket_by_length else None)

    step, position, counters = 0, Position(), {"skipped": 0, "samples": 0}
    if cfg.resume:
        step, position, counters, ckpt = _resume(cfg, run_dir, model, optimizer, scheduler, info)
        if step >= cfg.max_steps:
            return TrainResult(run_dir=run_dir, step=step, losses=[], checkpoint=ckpt,
                               skipped=counters.get("skipped", 0))
    config_yaml = dump_train_config(cfg)
    if info.is_main:
        (run_dir / "config.yaml").write_text(config_yaml)
    log = MetricsLog(run_dir / "metrics.jsonl", step if cfg.resume else None) if info.is_main else None

    autocast = torch.autocast(device_type=info.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    bar = tqdm(total=cfg.max_steps, initial=step, desc=cfg.stage, disable=not (cfg.progress and info.is_main),
               dynamic_ncols=True)
    losses: list[float] = []
    checkpoint = None
    train_mode(model)
    budget_end = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
    out_of_time = False
    while step < cfg.max_steps and not out_of_time:
        record, position = _optimizer_step(cfg, task, model, params, optimizer, scheduler, plan, position, info,
                                           counters, autocast)
        step = record["step"] = step + 1
        loss_value = record["loss"]
        losses.append(loss_value)
        out_of_time = budget_end is not None and time.monotonic() >= budget_end
        final = step == cfg.max_steps or out_of_time
        if task.evaluate is not None and ((cfg.listen.interval and step % cfg.listen.interval == 0) or final):
            record.update(task.evaluate(model))
        if log is not None and (step % cfg.log_interval == 0 or final):
            log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}", sps=f"{record['samples_per_s']:.1f}")
        if step % cfg.save_interval == 0 or final:
            checkpoint = save_checkpoint(run_dir, step, model, optimizer, scheduler, position, counters,
                                         config_yaml, info, export=task.export, save_model=task.save_model,
                                         keep_last=cfg.keep_last)
            if info.is_main:
                plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png", cfg.stage)
        for callback in callbacks:
            callback(step, record)
    bar.close()
    if out_of_time and info.is_main:
        print(f"{cfg.stage}: stopped at step {step}/{cfg.max_steps}: the {cfg.max_minutes:g}-minute budget is "
              "spent; run again with --resume to continue", flush=True)
    return TrainResult(run_dir=run_dir, step=step, losses=losses, checkpoint=checkpoint,
                       skipped=counters["skipped"])


def _resume(cfg: TrainConfig, run_dir: Path, model: nn.Module, optimizer, scheduler, info: DistInfo):
    """The latest checkpoint's (step, position, counters, path), loaded into the model, optimizer and scheduler."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"resume: no checkpoint in {run_dir / 'checkpoints'}; run without --resume")
    record = load_checkpoint(ckpt, model, optimizer, scheduler, info)
    step, position, counters = record["step"], record["position"], record["counters"]
    if step >= cfg.max_steps and info.is_main:
        print(f"{cfg.stage}: already complete ({step}/{cfg.max_steps} steps, checkpoint {ckpt}); "
              "nothing to resume", flush=True)
    return step, position, counters, ckpt


def _optimizer_step(cfg: TrainConfig, task: Task, model: nn.Module, params: list[torch.Tensor], optimizer, scheduler,
                    plan: BatchPlan, position: Position, info: DistInfo, counters: dict[str, int],
                    autocast) -> tuple[dict[str, Any], Position]:
    """One optimizer step over ``grad_accum`` micro-batches → its metrics record (without "step") and the
    data position after it."""
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    micro_losses = []
    n_samples = n_tokens = 0
    for micro in range(cfg.grad_accum):
        batch, position, n = _next_batch(task, plan, position, info, cfg, counters)
        n_samples += n
        with no_grad_sync(model, skip=micro < cfg.grad_accum - 1):
            with autocast:
                loss = task.loss(model, batch)
            (loss / cfg.grad_accum).backward()
        micro_losses.append(loss.detach().float())
        n_tokens += int(batch["attention_mask"].sum()) if isinstance(batch, dict) and "attention_mask" in batch else 0
    grad_norm = finish_gradients(task, model, params, cfg.optim.clip_norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    loss_value = mean_across_ranks(torch.stack(micro_losses).mean(), info)
    n_global = sum_across_ranks(n_samples, info)
    counters["samples"] += n_global
    elapsed = time.perf_counter() - started
    record = {"step": 0, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
              "samples_per_s": n_global / elapsed, "epoch": position.epoch,
              "tokens_per_s": sum_across_ranks(n_tokens, info) / elapsed,
              "skipped": sum_across_ranks(counters["skipped"], info) if info.enabled else counters["skipped"]}
    return record, position


def finish_gradients(task: Task, model: nn.Module, params: list[torch.Tensor], clip_norm: float) -> torch.Tensor:
    """After the last backward of a step: the task's gradient mask, then one global-norm clip
    (0 disables it). Returns the norm before clipping."""
    if task.grad_mask is not None:
        task.grad_mask(model)
    return torch.nn.utils.clip_grad_norm_(params, clip_norm) if clip_norm > 0 else _grad_norm(params)


def _decays(name: str, p: torch.Tensor, cfg: TrainConfig) -> bool:
    name = name.removeprefix("module.")  # DDP
    if cfg.embedding_grad_rows != "all" and name == EMBEDDING_KEY:
        return False  # decay would shrink the rows the gradient mask keeps frozen
    if cfg.optim.decay_params == "xattn":
        return GROUP_PATTERNS["xattn"](name)
    return cfg.optim.decay_1d or p.ndim >= 2


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, weight decay on those ``optim.decay_params`` names."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (cfg.optim.lr * lr_multiplier(name.removeprefix("module."), cfg.optim.group_lr),
                   cfg.optim.weight_decay if _decays(name, p, cfg) else 0.0)
            groups.setdefault(key, []).append(p)
    param_groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    return torch.optim.AdamW(param_groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)


def lr_multiplier(name: str, group_lr: dict[str, float]) -> float:
    """The ``optim.group_lr`` multiplier of parameter ``name`` (``gates`` wins over ``xattn``)."""
    if not group_lr:
        return 1.0
    if name.endswith(("attn_gate", "ff_gate")) and "gates" in group_lr:
        return group_lr["gates"]
    for group, scale in group_lr.items():
        if group != "gates" and GROUP_PATTERNS[group](name):
            return scale
    return 1.0


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads \
        else torch.zeros(())


def _next_batch(task: Task, plan: BatchPlan, position: Position, info: DistInfo, cfg: TrainConfig,
                counters: dict[str, int]) -> tuple[dict[str, Any], Position, int]:
    """This rank's next micro-batch; broken samples fail the run or are skipped and counted."""
    indices = plan.rank_batch(position, info.rank)
    samples = []
    for i in indices:
        try:
            samples.append(task.dataset[i])
        except Exception as exc:  # noqa: BLE001 - any failure to read a sample is a broken sample
            if cfg.data.broken_samples == "fail":
                raise RuntimeError(f"sample {i} is broken ({type(exc).__name__}: {exc}); fix the data or set "
                                   "data.broken_samples=skip") from exc
            counters["skipped"] += 1
            counters.setdefault("first_skipped", i)
    if not samples:
        raise RuntimeError(f"every sample of micro-batch {indices} is broken; fix the data")
    return _to_device(task.collate(samples), info.device), plan.advance(position), len(samples)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch
