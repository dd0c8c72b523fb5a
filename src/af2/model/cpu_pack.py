"""bf16 decoding on CPUs: the language model's linear weights pre-packed once for oneDNN.

A decoding step multiplies a few rows (1 at batch 1, 8 at batch 8) by every weight of the LM.
Measured on an AVX512-BF16 CPU, one thread, weights streamed from memory (not cache):

    rows   F.linear (oneDNN)   F.linear (PyTorch's own kernel)   pre-packed oneDNN
    1      6.0 GB/s            13.2 GB/s                         12.3 GB/s
    8      6.9 GB/s             2.5 GB/s                         13.7 GB/s

oneDNN re-lays-out (reorders) a plain weight at every call, which triples its memory traffic;
PyTorch's own bf16 kernel is a fine matrix-vector product but slow from 2 rows on. Packed once
at load time (``torch.ops.mkldnn._reorder_linear_weight``), one layout serves 1 row, 8 rows and
whole prompts at the read-bandwidth rate, and oneDNN can stay on for the cross-attention over
the audio keys/values (2x faster than PyTorch's own bf16 ``bmm`` for one query).

The tied embedding / LM head keeps its plain table (the embedding looks rows up in it) and the
head computes from a packed copy (AF2-0.5B, 8 rows: 45 -> 20 ms a step; one row: as fast as
PyTorch's own kernel; the copy costs the table's bytes again, 0.27 GB in bf16). Nothing here
switches oneDNN on or off globally, so the server's encoder and decoder threads can share it.
A packed model is for inference only: its packed weights are opaque and not in its state dict.
"""

from __future__ import annotations

import torch
from torch import nn

ROWS_HINT = 8  # the batch the packed layout is tuned for; measured as fast for 1 and 16 rows


def can_pack(model: nn.Module, device: torch.device) -> bool:
    """Whether packing applies: a CPU model in bf16, with oneDNN and its bf16 kernels available."""
    weight = next((m.weight for m in model.modules() if type(m) is nn.Linear), None)
    return (device.type == "cpu" and weight is not None and weight.dtype == torch.bfloat16
            and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """``nn.Linear`` whose weight is held in oneDNN's packed layout; same results as F.linear."""

    def __init__(self, linear: nn.Linear, rows_hint: int = ROWS_HINT):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint), persistent=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def state_dict(self, *args, **kwargs):
        raise RuntimeError("a model with packed CPU weights is for inference only; save the model before packing")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-packed"


class PackedHead(nn.Module):
    """A tied output head: the plain linear (sharing the embedding's table) kept for its weight,
    the products computed from a packed copy."""

    def __init__(self, linear: nn.Linear, rows_hint: int = ROWS_HINT):
        super().__init__()
        self.linear = linear
        self.packed = PackedLinear(linear, rows_hint)

    @property
    def weight(self) -> torch.Tensor:  # the tied table, for code that reads the head's weight
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.packed(x)


def pack_for_cpu(lm: nn.Module, rows_hint: int = ROWS_HINT) -> int:
    """Replace, in place, every ``nn.Linear`` of ``lm`` (decoder layers and cross-attention blocks)
    by a ``PackedLinear``, and its output head by a ``PackedHead``. Returns the number packed."""
    head = lm.get_output_embeddings()
    targets = [(name, m) for name, m in lm.named_modules() if type(m) is nn.Linear and m is not head]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(lm.get_submodule(parent_name) if parent_name else lm, attr, PackedLinear(module, rows_hint))
    if type(head) is nn.Linear:
        lm.set_output_embeddings(PackedHead(head, rows_hint))
    return len(targets)


def is_packed(lm: nn.Module) -> bool:
    return isinstance(lm.get_output_embeddings(), PackedHead)
