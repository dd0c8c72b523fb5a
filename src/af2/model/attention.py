"""Self-attention as two matmuls, for the audio side on CPUs in bf16.

PyTorch's CPU kernel for ``scaled_dot_product_attention`` is slow in bf16 (measured on a 2-vCPU
Zen 5: 146 ms a layer for the audio transformation layers over a 5-minute clip, 1,920 tokens, 8
heads of 256, where these two matmuls over 192 queries at a time take 61 ms; and 29 % of the nano
HTSAT's encode for its 64-token windows). ``matmul_attention`` computes the same
``softmax(q·kᵀ/√d + bias)·v`` with the scores made in the input dtype and the softmax in fp32; long
sequences go through in blocks of queries, so each block's scores stay in cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

QUERY_BLOCK = 192  # queries per block over long sequences (measured best of 64-512 at 1,920 keys)


def use_matmul_attention(x: Tensor) -> bool:
    """Whether attention over ``x`` should take ``matmul_attention`` (CPU and bf16) rather than SDPA."""
    return x.device.type == "cpu" and x.dtype == torch.bfloat16


def matmul_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, query_block: int = QUERY_BLOCK) -> Tensor:
    """(..., Lq, d) queries, (..., Lk, d) keys and values, an additive ``bias`` broadcastable to
    (..., Lq, Lk) in q's dtype (``-inf`` hides a key) → (..., Lq, d). Scales q·k by d^-0.5 as
    ``scaled_dot_product_attention`` does. Every query needs at least one key it may see."""
    q = q * q.shape[-1] ** -0.5
    kt = k.transpose(-1, -2)

    def block(qb: Tensor, bb: Tensor) -> Tensor:
        scores = torch.matmul(qb, kt) + bb
        wide = torch.promote_types(scores.dtype, torch.float32)  # softmax in fp32 at least
        return torch.matmul(scores.to(wide).softmax(dim=-1).to(v.dtype), v)

    n = q.shape[-2]
    if n <= query_block:
        return block(q, bias)
    rows = bias.shape[-2] > 1  # a bias per query (not one row broadcast over them) is cut with q
    return torch.cat([block(q[..., i:i + query_block, :], bias[..., i:i + query_block, :] if rows else bias)
                      for i in range(0, n, query_block)], dim=-2)
