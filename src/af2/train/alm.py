"""The training step of stages 1-3 (audio-language model), as the official trainer computes it:
the loss over the answer tokens, the embedding-gradient row mask, and the ``Task`` that the
engine runs. ``af2 check-train-parity`` (``af2.train.parity``) checks every piece against a
golden fixture made by the official training code.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from af2.config import AF2Config
from af2.data.dataset import ManifestDataset
from af2.errors import ConfigError
from af2.model.af2 import EMBEDDING_KEY
from af2.tokens import IGNORE_INDEX, special_token_ids
from af2.train.config import TrainConfig
from af2.train.data import Collator, blended_items
from af2.train.distributed import unwrap
from af2.train.engine import Task
from af2.train.tower_cache import TowerCache



def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) labels → (B, T-1) cross-entropy of logits[:, :-1] against
    labels[:, 1:] (the causal shift), 0 where the label is ignored. Computed in fp32."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), labels[:, 1:].reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="none")
    return nll.view(B, T - 1)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every target of the batch, as Hugging Face's causal-LM loss; a batch
    whose rows have no target at all (e.g. answers cut by the token limit) gives 0, not NaN."""
    n = (labels[:, 1:] != IGNORE_INDEX).sum()
    return token_nll(logits, labels).sum() / n.clamp_min(1)


def forward_loss(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """One teacher-forced forward of a collated batch → (loss, logits (B, T, V))."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    return causal_lm_loss(logits, batch["labels"]), logits


def alm_loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return forward_loss(model, batch)[0]


def lean_alm_loss(model: nn.Module, batch: dict[str, Any], *, input_grad: bool, targets_only: bool,
                  tower: TowerCache | None = None) -> torch.Tensor:
    """``alm_loss`` computed with less work, same value (up to float rounding):

    - ``targets_only``: the LM head runs only at positions whose next token is a target in some row
      (the answers, about a fifth of a batch's positions) instead of over the whole sequence;
    - ``input_grad=False``: the input embeddings are detached, so backward stops at the lowest
      cross-attention block instead of running through every frozen layer below it. The tied embedding
      then learns only as the output head (which is how <|endofchunk|> is predicted);
    - ``tower``: a frozen audio tower's outputs come from a cache (one process only: the audio
      transformer then runs outside a DDP/FSDP wrapper's forward).
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "input_ids")}
    if tower is not None:
        bare = unwrap(model)
        windows, window_mask = inputs.pop("windows"), inputs.pop("window_mask")
        inputs["audio"] = bare.encode_audio(windows, window_mask, tokens=tower.tokens(bare, windows, window_mask))
    embeds = unwrap(model).lm.get_input_embeddings()(batch["input_ids"])
    if not input_grad:
        embeds = embeds.detach()
    if not targets_only:
        logits = model(inputs_embeds=embeds, **inputs).logits
        return causal_lm_loss(logits, labels)
    follows = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): position t predicts a target
    keep = follows.any(dim=0).nonzero().squeeze(1)  # (K,)
    if keep.numel() == 0:
        return embeds.sum() * 0.0
    logits = model(inputs_embeds=embeds, logits_to_keep=keep, **inputs).logits  # (B, K, V)
    nll = F.cross_entropy(logits.float().flatten(0, 1), labels[:, keep + 1].reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="sum")
    return nll / follows.sum().clamp_min(1)


class EmbeddingGradMask:
    """Zero the (tied) embedding's gradient except ``rows``, as the official non-FSDP trainer does
    for <audio> and <|endofchunk|>: the rest of the vocabulary stays as the base LM has it."""

    def __init__(self, rows: list[int]):
        self.rows = rows

    def __call__(self, model: nn.Module) -> None:
        weight = unwrap(model).get_parameter(EMBEDDING_KEY)
        grad = weight.grad
        if grad is None:
            return
        keep = torch.zeros(grad.shape[0], 1, dtype=grad.dtype, device=grad.device)  # (V, 1)
        keep[self.rows] = 1
        local = grad
        if hasattr(grad, "to_local"):  # an FSDP2 shard (DTensor): mask this rank's rows in place
            from torch.distributed.tensor import distribute_tensor

            keep = distribute_tensor(keep, grad.device_mesh, grad.placements, src_data_rank=None).to_local()
            local = grad.to_local()
        local.mul_(keep)


def with_training_options(arch: AF2Config, cfg: TrainConfig) -> AF2Config:
    """The model architecture with the run's training-only options (audio-transformer dropout)."""
    return replace(arch, audio_transformer=replace(arch.audio_transformer, attn_dropout=cfg.audio_attn_dropout))


def alm_task(cfg: TrainConfig, model: nn.Module, tokenizer, base_vocab: int | None = None) -> Task:
    """The stage 1-3 task over ``cfg.data`` for a built ``model`` (stage applied) and its tokenizer;
    ``base_vocab`` (the base LM's rows) is needed by ``embedding_grad_rows: new``."""
    arch: AF2Config = model.cfg
    dataset = ManifestDataset(blended_items(cfg.data), cfg.data.data_root, arch.audio)
    tokens = replace(arch.tokens, max_tokens=cfg.data.max_tokens)
    fewshot = cfg.xattn_fewshot_tokens if cfg.xattn_mask == "official_fewshot" else None
    grad_mask = None
    if cfg.embedding_grad_rows == "special" and model.get_parameter(EMBEDDING_KEY).requires_grad:
        ids = special_token_ids(tokenizer, arch.tokens)
        grad_mask = EmbeddingGradMask([ids.audio, ids.end_of_chunk])
    elif cfg.embedding_grad_rows == "new" and model.get_parameter(EMBEDDING_KEY).requires_grad:
        if base_vocab is None:
            raise ConfigError("embedding_grad_rows: new needs a base_lm (its rows are the ones kept frozen)")
        grad_mask = EmbeddingGradMask(list(range(base_vocab, arch.vocab_size)))
    loss = alm_loss
    if cfg.lean_loss:
        frozen_tower = "clap" not in cfg.trainable and int(os.environ.get("WORLD_SIZE", "1")) == 1
        loss = functools.partial(lean_alm_loss, input_grad="embeddings" in cfg.trainable and cfg.embedding_input_grad,
                                 targets_only=True, tower=TowerCache() if frozen_tower else None)
    return Task(model=model, dataset=dataset, collate=Collator(tokenizer, tokens, cfg.windows, fewshot),
                loss=loss, lengths=dataset.lengths(), grad_mask=grad_mask)
