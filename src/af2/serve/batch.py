"""The running decode batch of continuous batching: rows join at a step boundary and leave at once.

Built on the model's public pieces: ``AF2Model.forward`` with a Hugging Face ``DynamicCache`` and a
precomputed ``AudioContext`` (cross-attention keys/values cached per request). A joining group is
prefilled on its own, then its caches are merged into the running ones by left-padding the shorter
self-attention cache and right-padding the shorter audio; masks hide the padding and position ids
count each row's real tokens, so every row computes what it would compute alone.

Shapes: B rows, L cached positions (left-padded), N audio tokens (right-padded), H heads, d head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from af2.generate import left_pad
from af2.model.af2 import AF2Model
from af2.model.xattn import AudioContext
from af2.serve.sampling import SamplingTensors, choose


def _pad_cat(a: torch.Tensor, b: torch.Tensor, dim: int, left: bool, value=0) -> torch.Tensor:
    """Concatenate along the batch dim after padding ``dim`` of the shorter one to the longer's size."""
    size = max(a.shape[dim], b.shape[dim])

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = size - t.shape[dim]
        if extra == 0:
            return t
        spec = [0, 0] * (t.ndim - 1 - dim) + ([extra, 0] if left else [0, extra])
        return F.pad(t, spec, value=value)

    return torch.cat([pad(a), pad(b)])


def _merge_audio(a: AudioContext, b: AudioContext) -> AudioContext:
    kv = tuple(None if p is None else (_pad_cat(p[0], q[0], 2, False), _pad_cat(p[1], q[1], 2, False))
               for p, q in zip(a.kv, b.kv))
    return AudioContext(torch.cat([a.features, b.features]), _pad_cat(a.mask, b.mask, 1, False, False), kv)


def _kv_only(audio: AudioContext) -> AudioContext:
    """Drop the audio features: with every layer's keys/values cached, decoding never reads them."""
    if audio.kv is None:
        raise ValueError("the serve batch needs audio keys/values cached (encode_audio(..., cache_kv=True))")
    B, _, D = audio.features.shape
    return AudioContext(audio.features.new_zeros(B, 0, D), audio.mask, audio.kv)


class DecodeBatch:
    """Self-attention cache, masks, positions, audio and sampling options of the running rows."""

    def __init__(self, model: AF2Model, pad_id: int):
        self.model = model
        self.pad_id = pad_id
        self.clear()

    def clear(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, L) 1 = real position
        self.positions: torch.Tensor | None = None  # (B,) position id of the next input token
        self.next_tokens: torch.Tensor | None = None  # (B,) the token each row feeds next
        self.steps: torch.Tensor | None = None  # (B,) tokens chosen so far: the sampling counter
        self.audio: AudioContext | None = None
        self.opts: SamplingTensors | None = None

    @property
    def size(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @torch.inference_mode()
    def join(self, audio: AudioContext, prompts: list[list[int]], opts: SamplingTensors) -> torch.Tensor:
        """Prefill a group of new rows (appended after the running ones); return their (Bn,) first tokens."""
        device = audio.mask.device
        ids, mask = left_pad(prompts, self.pad_id, device)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.lm.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, audio=audio, cache=cache,
                         use_cache=True, logits_to_keep=1)
        steps = torch.zeros(len(prompts), dtype=torch.long, device=device)
        first = choose(out.logits[:, -1], opts, steps)
        state = (cache, mask, mask.sum(dim=-1), first, steps + 1, _kv_only(audio), opts)
        if self.size == 0:
            self._set(*state)
        else:
            self._merge(*state)
        return first

    def _set(self, cache, mask, positions, next_tokens, steps, audio, opts) -> None:
        if not all(type(layer) is DynamicLayer for layer in cache.layers):
            raise ValueError("continuous batching needs a full-attention LM cache (no sliding-window layers)")
        self.cache, self.mask, self.positions, self.next_tokens = cache, mask, positions, next_tokens
        self.steps, self.audio, self.opts = steps, audio, opts

    def _merge(self, cache, mask, positions, next_tokens, steps, audio, opts) -> None:
        # Self-attention caches are (B, H, L, d): left-pad the shorter along L, as the masks are.
        data = [(_pad_cat(old.keys, new.keys, 2, True), _pad_cat(old.values, new.values, 2, True))
                for old, new in zip(self.cache.layers, cache.layers)]
        self._set(DynamicCache(ddp_cache_data=data, config=self.model.lm.config),
                  _pad_cat(self.mask, mask, 1, True), torch.cat([self.positions, positions]),
                  torch.cat([self.next_tokens, next_tokens]), torch.cat([self.steps, steps]),
                  _merge_audio(self.audio, audio), self.opts.cat(opts))

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """One decoding step for every row → (B,) new tokens."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.model(input_ids=self.next_tokens[:, None], attention_mask=self.mask,
                         position_ids=self.positions[:, None], audio=self.audio, cache=self.cache, use_cache=True,
                         logits_to_keep=1)
        tokens = choose(out.logits[:, -1], self.opts, self.steps)
        self.positions = self.positions + 1
        self.steps = self.steps + 1
        self.next_tokens = tokens
        return tokens

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order); drop padding no remaining row needs."""
        if len(rows) == self.size:
            return
        if not rows:
            self.clear()
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(dim=0).int().argmax())  # first position some row still attends to
        audio = self.audio.select(index)
        n = int(audio.mask.sum(dim=1).max())  # audio is right-padded: keep the longest row's tokens
        kv = tuple(None if p is None else (p[0][:, :, :n], p[1][:, :, :n]) for p in audio.kv)
        data = [(layer.keys[index, :, start:], layer.values[index, :, start:]) for layer in self.cache.layers]
        self._set(DynamicCache(ddp_cache_data=data, config=self.model.lm.config), mask[:, start:],
                  self.positions[index], self.next_tokens[index], self.steps[index],
                  AudioContext(audio.features, audio.mask[:, :n], kv), self.opts.select(index))
