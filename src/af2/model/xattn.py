"""Gated cross-attention (XATTN-Dense), inserted before decoder layers by composition (spec 4).

Audio reaches the layers as an explicit ``AudioContext`` argument that flows through the Hugging
Face model's ``**kwargs``; nothing is stored on the modules. The context can carry every layer's
cross-attention keys and values, computed once per request, so decoding steps reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from af2.config import XAttnConfig


@dataclass(frozen=True)
class AudioContext:
    """Audio seen by the cross-attention blocks.

    features: (B, N, Da) audio transformer output; mask: (B, N) bool, True = real audio token;
    kv: optional per-layer (K, V), each (B, heads, N, dim_head), indexed by decoder layer (None
    for layers without a block).
    text_limit: optional (B, T) long, teacher-forced passes only: text token t sees only audio
    tokens [0, text_limit[b, t]), the official training code's "few-shot" mask (spec 4.4,
    ``af2.tokens.fewshot_audio_limit``). None: every text token sees every real audio token.
    """

    features: torch.Tensor
    mask: torch.Tensor
    kv: tuple[tuple[torch.Tensor, torch.Tensor] | None, ...] | None = None
    text_limit: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> AudioContext:
        """The context of batch rows ``index`` (used when a batch shrinks or repeats)."""
        kv = None if self.kv is None else tuple(None if p is None else (p[0][index], p[1][index]) for p in self.kv)
        limit = None if self.text_limit is None else self.text_limit[index]
        return AudioContext(self.features[index], self.mask[index], kv, limit)

    @cached_property
    def all_real(self) -> bool:
        """Whether every audio token of every row is real (no padding): then no mask is needed.
        Read once per context (a decoding request reuses it at every layer and step). Only on the CPU:
        on an accelerator the check would cost a host sync per forward (every training step builds a new
        context), while the mask itself costs little there; the results are identical either way."""
        return self.mask.device.type == "cpu" and bool(self.mask.all())

    def attention_mask(self, T: int) -> torch.Tensor | None:
        """Boolean mask over audio keys, broadcastable to (B, heads, T, N); None when every text
        token sees every audio token (no padding, no few-shot limit): masking would change nothing."""
        if self.text_limit is None:
            return None if self.all_real else self.mask[:, None, None, :]
        if self.text_limit.shape[1] != T:
            raise ValueError(f"text_limit covers {self.text_limit.shape[1]} text tokens but the layer sees {T}; "
                             "the few-shot mask is for teacher-forced passes only, not cached decoding")
        N = self.mask.shape[1]
        sees = torch.arange(N, device=self.mask.device)[None, None, :] < self.text_limit[:, :, None]  # (B, T, N)
        return (self.mask[:, None, :] & sees)[:, None]


class MaskedCrossAttention(nn.Module):
    def __init__(self, dim: int, dim_audio: int, cfg: XAttnConfig):
        super().__init__()
        inner = cfg.heads * cfg.dim_head
        self.heads, self.dim_head = cfg.heads, cfg.dim_head
        self.norm = nn.LayerNorm(dim, eps=cfg.layernorm_eps)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_audio, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        # One query row per step over the audio: af2.model.cpu_decode swaps in a fused kernel for CPU batches.
        self.kernel = audio_attention

    def keys_values(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio: (B, N, Da) → K, V each (B, heads, N, dim_head)."""
        B, N, _ = audio.shape
        k, v = self.to_kv(audio).chunk(2, dim=-1)
        return tuple(t.view(B, N, self.heads, self.dim_head).transpose(1, 2) for t in (k, v))

    def forward(self, x: torch.Tensor, audio_mask: torch.Tensor | None,
                kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x: (B, T, D) text states → (B, T, D). audio_mask: boolean, (B, 1, 1, N) (every text
        token sees every real audio token), (B, 1, T, N) (a per-token mask: the few-shot one) or
        None (every text token sees every audio token)."""
        B, T, _ = x.shape
        q = self.to_q(self.norm(x)).view(B, T, self.heads, self.dim_head).transpose(1, 2)
        k, v = (t.to(q.dtype) for t in kv)  # a no-op when K/V were computed in the model's dtype
        if audio_mask is None or audio_mask.shape[-2] == 1:
            out = self.kernel(q, k, v, audio_mask)
        else:
            # Explicit softmax, as the official code: a text token that sees a single audio token
            # then gets exactly zero query gradient (a fused kernel leaves ~1e-7 residues, which
            # Adam would blow up to lr-sized updates of to_q).
            scores = (q * self.dim_head ** -0.5) @ k.transpose(-1, -2)  # (B, heads, T, N)
            scores = scores.masked_fill(~audio_mask, torch.finfo(scores.dtype).min)
            out = scores.softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(B, T, -1))


def audio_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    audio_mask: torch.Tensor | None) -> torch.Tensor:
    """q: (B, H, T, Dh), k/v: (B, H, N, Dh), audio_mask: (B, 1, 1, N) bool with at least one real
    token per row, or None (no padding) → (B, H, T, Dh).

    Written as two batched matmuls rather than ``scaled_dot_product_attention``: with few queries
    (a decoding step has one) and N up to 1,920 audio tokens, PyTorch's CPU SDPA kernel in bf16
    ran 7x slower than this (1.7 ms against 0.25 ms per layer, one thread), and this form streams
    K and V once. The softmax is taken in fp32, as SDPA does internally. Without padding the mask
    is skipped: at batch 1 over 5 minutes of audio it cost a fifth of the cross-attention (24
    layers, bf16, two threads: 9.7 ms with it, 7.7 without).
    """
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5  # (B, H, T, N)
    if audio_mask is not None:
        scores = scores.masked_fill(~audio_mask, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1).to(v.dtype), v)


class GatedCrossAttentionBlock(nn.Module):
    """x ← x + tanh(g_attn)·s·attn(x, audio); x ← x + tanh(g_ff)·s·ff(x). Gates start at 0; s is
    ``XAttnConfig.output_scale`` (1 in the official model)."""

    def __init__(self, dim: int, dim_audio: int, cfg: XAttnConfig):
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_audio, cfg)
        self.attn_gate = nn.Parameter(torch.full((1,), float(cfg.attn_gate_init)))
        self.ff = nn.Sequential(
            nn.LayerNorm(dim, eps=cfg.layernorm_eps),
            nn.Linear(dim, dim * cfg.ff_mult, bias=False),
            nn.GELU(),
            nn.Linear(dim * cfg.ff_mult, dim, bias=False),
        )
        self.ff_gate = nn.Parameter(torch.zeros(1))
        self.output_scale = cfg.output_scale

    def forward(self, x: torch.Tensor, audio_mask: torch.Tensor,
                kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn_gate.tanh() * self.output_scale * self.attn(x, audio_mask, kv)  # × 1.0 is exact
        return x + self.ff_gate.tanh() * self.output_scale * self.ff(x)


class XAttnDecoderLayer(nn.Module):
    """A decoder layer of the base LM with an optional gated cross-attention block before it.

    Replaces the LM's layer in its layer list; the wrapped layer is untouched, so the plain LM's
    behaviour is recovered exactly when there is no audio or the gates are zero.
    """

    def __init__(self, decoder_layer: nn.Module, xattn: GatedCrossAttentionBlock | None, layer_idx: int):
        super().__init__()
        self.decoder_layer = decoder_layer
        self.xattn = xattn
        self.layer_idx = layer_idx

    @property
    def attention_type(self) -> str:  # read by some HF models to pick the layer's mask
        return getattr(self.decoder_layer, "attention_type", "full_attention")

    def forward(self, hidden_states: torch.Tensor, *args, audio_context: AudioContext | None = None, **kwargs):
        if self.xattn is not None and audio_context is not None:
            if audio_context.kv is not None:
                kv = audio_context.kv[self.layer_idx]
            else:
                kv = self.xattn.attn.keys_values(audio_context.features)
            hidden_states = self.xattn(hidden_states, audio_context.attention_mask(hidden_states.shape[1]), kv)
        return self.decoder_layer(hidden_states, *args, **kwargs)
