"""Batched, streamed decoding with a self-attention KV cache and cached audio keys/values.

Prompts are left-padded so every row's last prompt token sits in the last column; position ids
count real tokens only, so each row computes what it would compute alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from af2.errors import RequestError
from af2.model.af2 import AF2Model
from af2.model.xattn import AudioContext


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding options. Greedy by default, as the official benchmarks decode (temperature 0)."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off; the official demo script samples with top_k=30, top_p=0.95
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise RequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise RequestError("sampling needs temperature > 0 (use do_sample=False for greedy decoding)")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise RequestError(f"top_k must be >= 0, got {self.top_k}")


def left_pad(sequences: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists → (B, T) ids left-padded with ``pad_id`` and the (B, T) attention mask."""
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for row, seq in enumerate(sequences):  # building the input, not a tensor hot path
        if seq:
            ids[row, T - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, T - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _pick(logits: torch.Tensor, gen: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) next-token logits → (B,) token ids."""
    if not gen.do_sample:
        return logits.float().argmax(dim=-1)  # the same index; PyTorch's bf16 argmax is 5x slower on CPUs
    logits = logits.float() / gen.temperature
    if gen.top_k:
        kth = logits.topk(min(gen.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if gen.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop tokens once the mass *before* them already reaches top_p (always keep the first).
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= gen.top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.inference_mode()
def stream_tokens(model: AF2Model, audio: AudioContext, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  gen: GenerationConfig, stop_ids: tuple[int, ...], pad_id: int,
                  step_logits: list[torch.Tensor] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield, per decoding step, the (B,) new tokens and the (B,) mask of rows still running.

    Rows that produced a stop token yield ``pad_id`` afterwards. ``step_logits``, if given,
    collects each step's raw (B, V) next-token logits.
    """
    generator = None
    if gen.do_sample and gen.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(gen.seed)
    B = input_ids.shape[0]
    cache = DynamicCache(config=model.lm.config)
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    running = torch.ones(B, dtype=torch.bool, device=input_ids.device)
    stops = torch.tensor(stop_ids, dtype=torch.long, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, audio=audio,
                cache=cache, use_cache=True, logits_to_keep=1)
    for _ in range(gen.max_new_tokens):
        logits = out.logits[:, -1]
        if step_logits is not None:
            step_logits.append(logits.float().clone())
        token = torch.where(running, _pick(logits, gen, generator), torch.full_like(running, pad_id, dtype=torch.long))
        yield token, running.clone()
        running = running & ~torch.isin(token, stops)
        if not running.any():
            return
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        position_ids = position_ids[:, -1:] + 1
        out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position_ids,
                    audio=audio, cache=cache, use_cache=True, logits_to_keep=1)


def generate(model: AF2Model, audio: AudioContext, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             gen: GenerationConfig, stop_ids: tuple[int, ...], pad_id: int,
             step_logits: list[torch.Tensor] | None = None) -> list[list[int]]:
    """Decode every row; return each row's new token ids (stop token included when produced)."""
    steps = [(tok, live) for tok, live in stream_tokens(model, audio, input_ids, attention_mask, gen, stop_ids,
                                                         pad_id, step_logits)]
    if not steps:
        return [[] for _ in range(input_ids.shape[0])]
    tokens = torch.stack([t for t, _ in steps], dim=1).tolist()  # (B, steps)
    live = torch.stack([m for _, m in steps], dim=1).sum(dim=1).tolist()  # steps each row ran
    return [row[:n] for row, n in zip(tokens, live)]
