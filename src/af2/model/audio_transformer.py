"""The audio representation transformation layers (spec section 3).

Three post-LN self-attention layers over all the CLAP tokens of a clip, flattened across windows
(W·64 tokens), with a partial rotary embedding whose positions run 0..W·64-1 without resetting
per window, and a key-padding mask that hides padded windows. Width = the CLAP output width;
no input or output projection. Parameter names follow the official module so checkpoints map 1:1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from af2.config import AudioTransformerConfig
from af2.model.attention import matmul_attention, use_matmul_attention


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE on the first ``dim`` channels of each head, computed in fp32."""

    def __init__(self, dim: int, base: float):
        super().__init__()
        self.dim = dim
        # Persistent, as in the official module, so released checkpoints carry (and we check) it.
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, N, Dh) → same shape, channels [0, dim) rotated by position."""
        N = x.shape[-2]
        pos = torch.arange(N, device=x.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.float())  # (N, dim/2)
        angles = torch.cat([freqs, freqs], dim=-1)  # (N, dim)
        rot, rest = x[..., : self.dim].float(), x[..., self.dim:]
        half = self.dim // 2
        rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
        out = rot * angles.cos() + rotated * angles.sin()
        return torch.cat([out.to(x.dtype), rest], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, eps: float, attn_dropout: float = 0.0):
        super().__init__()
        self.n_head = n_head
        self.attn_dropout = attn_dropout
        self.d_k = d_model // n_head
        self.w_qs = nn.Linear(d_model, d_model, bias=False)
        self.w_ks = nn.Linear(d_model, d_model, bias=False)
        self.w_vs = nn.Linear(d_model, d_model, bias=False)
        self.fc = nn.Linear(d_model, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, rope: RotaryEmbedding) -> torch.Tensor:
        """x: (B, N, D); key_mask: (B, N) bool, True = real token."""
        B, N, D = x.shape
        q, k, v = (w(x).view(B, N, self.n_head, self.d_k).transpose(1, 2) for w in (self.w_qs, self.w_ks, self.w_vs))
        q, k = rope(q), rope(k)
        if use_matmul_attention(q) and not (self.training and self.attn_dropout):
            # bf16 on CPUs: SDPA's kernel took 2.4x as long over a 5-min clip (af2.model.attention)
            hide = torch.zeros(B, 1, 1, N, dtype=q.dtype, device=q.device)
            out = matmul_attention(q, k, v, hide.masked_fill_(~key_mask[:, None, None, :], float("-inf")))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                                 dropout_p=self.attn_dropout if self.training else 0.0)
        out = self.fc(out.transpose(1, 2).reshape(B, N, D))
        return self.layer_norm(out + x)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_inner: int, eps: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_inner)
        self.w_2 = nn.Linear(d_inner, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.w_2(F.relu(self.w_1(x))) + x)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, cfg: AudioTransformerConfig):
        super().__init__()
        self.slf_attn = SelfAttention(d_model, cfg.n_head, cfg.layernorm_eps, cfg.attn_dropout)
        self.pos_ffn = FeedForward(d_model, cfg.d_inner, cfg.layernorm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, rope: RotaryEmbedding) -> torch.Tensor:
        return self.pos_ffn(self.slf_attn(x, key_mask, rope))


class AudioTransformer(nn.Module):
    """(B, N, D) CLAP tokens + (B, N) mask → (B, N, D) audio features for cross-attention."""

    def __init__(self, d_model: int, cfg: AudioTransformerConfig):
        super().__init__()
        if d_model % cfg.n_head:
            raise ValueError(f"audio width {d_model} is not divisible by {cfg.n_head} heads")
        d_k = d_model // cfg.n_head
        rotary_dim = max(d_k // 2, 32)  # the official formula; rotates part of each head
        if rotary_dim > d_k:
            raise ValueError(f"head size {d_k} is below the rotary size {rotary_dim}; use fewer heads")
        self.scale = math.sqrt(d_model) if cfg.scale_emb else 1.0
        self.position_enc = RotaryEmbedding(rotary_dim, cfg.rotary_base)
        self.layer_norm = nn.LayerNorm(d_model, eps=cfg.layernorm_eps)
        self.layer_stack = nn.ModuleList(EncoderLayer(d_model, cfg) for _ in range(cfg.n_layers))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, D); mask: (B, N), nonzero = real (unpadded) token."""
        key_mask = mask.bool()
        x = self.layer_norm(tokens * self.scale)
        for layer in self.layer_stack:
            x = layer(x, key_mask, self.position_enc)
        return x
