"""Weight-only int8 quantization of AF2's linear layers: the language model, its cross-attention
blocks, the audio encoder and the transformation layers.

Each linear's weight W (out, in) is stored as int8 codes q and one scale per output channel s,
symmetric: W ≈ q · s[:, None], s = max|W_row| / 127 (rounded to bf16 first, so the dequantized
weight is exactly q · s in bf16). Activations stay in floating point: the matmul runs in bf16
through PyTorch's own int8-weight kernel (``torch._weight_int8pack_mm``), which reads one byte
per weight instead of two (bf16) or four (fp32). The tied embedding / LM head share one int8
table with per-row scales, which are exactly the head's per-output-channel scales.

The audio encoder (HTSAT) and the transformation layers hold a third of AF2-0.5B's weights, so
they are quantized too (int8 weights are then 0.505x bf16, against 0.67x with the LM alone).
They are compute-bound, hundreds of rows per call, where the int8 kernel is slow (HTSAT over two
windows, AVX512-BF16 CPU, two threads: 0.77 s in bf16, 1.85 s through the int8 kernel):
``Int8DequantLinear`` dequantizes its weight to the activations' dtype at each call instead (0.82 s).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Activations of the int8 matmul: the kernel has a fast bf16 path; its fp32 path is ~6x slower.
ACT_DTYPE = torch.bfloat16
_SLICE = 1 << 20  # values quantized at a time: a few MB of fp32 temporaries, whatever the weight's width


def quantize_rows(weight: torch.Tensor, codes: torch.Tensor | None = None,
                  scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float weight → (N, K) int8 codes and (N,) bf16 scales, symmetric per row; written
    into ``codes`` and ``scale`` when given (a loader's tensors)."""
    if codes is None:
        codes = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    if scale is None:
        scale = torch.empty(weight.shape[0], dtype=ACT_DTYPE, device=weight.device)
    rows = max(1, _SLICE // max(math.prod(weight.shape[1:]), 1))
    for start in range(0, weight.shape[0], rows):  # in slices: a whole fp32 copy of the vocabulary is 0.5 GB
        w = weight[start:start + rows].detach().float()
        s = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(ACT_DTYPE).tiny).to(ACT_DTYPE)
        codes[start:start + rows] = (w / s.float()[:, None]).round_().clamp_(-127, 127)
        scale[start:start + rows] = s
    return codes, scale


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights and per-output-channel scales; input and output keep their dtype."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.register_buffer("weight", codes)  # (N, K) int8
        self.register_buffer("scale", scale)  # (N,) bf16
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        codes, scale = quantize_rows(linear.weight)
        return cls(codes, scale, linear.bias)

    def dequantized(self) -> torch.Tensor:
        """The (N, K) weight the int8 codes stand for, exactly, in fp32 (the reference for tests)."""
        return self.weight.float() * self.scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., K) → (..., N) in x's dtype."""
        flat = x.reshape(-1, self.in_features).to(ACT_DTYPE)
        # The CPU kernel needs K % 16 == 0 (every AF2 width is); other shapes and devices dequantize.
        if flat.device.type == "cpu" and self.in_features % 16 == 0:
            y = torch._weight_int8pack_mm(flat.contiguous(), self.weight, self.scale.to(ACT_DTYPE))
        else:
            y = F.linear(flat.float(), self.dequantized())
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


class Int8DequantLinear(Int8Linear):
    """An ``Int8Linear`` for compute-bound layers (the audio encoder and transformation layers):
    each call dequantizes the weight to the input's dtype, exactly (q · s rounded once), and runs
    the float matmul; the weight stays int8 between calls."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., K) → (..., N) in x's dtype."""
        weight = self.weight.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with per-row scales; returns rows in ``dtype``."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.num_embeddings, self.embedding_dim = codes.shape
        self.register_buffer("weight", codes)  # (V, D) int8
        self.register_buffer("scale", scale)  # (V,) bf16
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, T) → (B, T, D)."""
        return (self.weight[ids].float() * self.scale[ids].float().unsqueeze(-1)).to(self.dtype)


def quantize_int8(model: nn.Module) -> int:
    """Quantize an AF2Model in place: in its LM (``model.lm``) every ``nn.Linear`` (decoder layers,
    cross-attention blocks, LM head) becomes an ``Int8Linear`` and the input embedding an
    ``Int8Embedding``, a tied head sharing the embedding's int8 table; in the audio encoder and
    the transformation layers every ``nn.Linear`` becomes an ``Int8DequantLinear``. Returns the
    number of weights quantized."""
    lm = model.lm
    embed = lm.get_input_embeddings()
    head = lm.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    codes, scale = quantize_rows(embed.weight)
    lm.set_input_embeddings(Int8Embedding(codes, scale, embed.weight.dtype))
    if tied:
        lm.set_output_embeddings(Int8Linear(codes, scale, head.bias))
    count = codes.numel() + _replace_linears(lm, Int8Linear)  # a tied head is no nn.Linear any more
    for tower in (model.audio_encoder, model.audio_transformer):
        count += _replace_linears(tower, Int8DequantLinear)
    return count


def _replace_linears(root: nn.Module, kind: type[Int8Linear]) -> int:
    """Every ``nn.Linear`` under ``root`` replaced by ``kind``; returns the number of weights quantized."""
    targets = [(name, m) for name, m in root.named_modules() if isinstance(m, nn.Linear)]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, attr, kind.from_linear(module))
    return sum(module.weight.numel() for _, module in targets)
