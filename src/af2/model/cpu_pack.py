"""Decoding on CPUs: the language model's linear weights pre-packed once for oneDNN (bf16, and fp32
on AVX-512 CPUs). The audio path's linears are packed too (``lay_out_audio_for_cpu``, at the end).

A decoding step multiplies a few rows (1 at batch 1, 8 at batch 8) by every weight of the LM.
Measured with ``benchmarks/linear_kernels.py`` (AF2-0.5B's whole per-step weight set, 265 calls,
2-vCPU AMD EPYC with AVX512-BF16, 2 threads, read stream 32 GB/s), ms per step:

    rows   fp32 F.linear (MKL)   fp32 packed   bf16 F.linear (oneDNN)   bf16 PyTorch's kernel   bf16 packed
    1      208                   110           88                       42                      63
    8      371                   122           107                      280                     65

oneDNN re-lays-out (reorders) a plain weight at every call, which multiplies its memory traffic;
PyTorch's own bf16 kernel is a fine matrix-vector product (at the read floor for one row) but
slow from 2 rows on; MKL's fp32 kernels stream at 7-13 GB/s. Packed once at load time
(``torch.ops.mkldnn._reorder_linear_weight``), one layout serves 1 row, 8 rows and whole prompts
at 1.3-1.5x the read floor, and oneDNN can stay on for the cross-attention over the audio
keys/values (2x faster than PyTorch's own bf16 ``bmm`` for one query). With one thread packed fp32
is as fast as MKL for one row (217 against 210 ms) and still 1.7x faster for 8; fp32 is packed only
on AVX-512 CPUs, where it was measured. Whole decoding steps (AF2-0.5B, 30-s clip, 2 threads),
ms/token at batch 1 / 8: fp32 plain 302 / 448, packed 191 / 209; bf16 packed 92 / 122, plain with
PyTorch's kernel for whole single-row steps 82 / 175 (the switch slowed the audio cross-attention
too; ``RowLinear`` below confines it to the linears).

The tied embedding / LM head keeps its plain table (the embedding looks rows up in it) and the
head computes from a packed copy (AF2-0.5B, 8 rows: 45 -> 20 ms a step in bf16; the copy costs the
table's bytes again, 0.27 GB in bf16, 0.54 GB in fp32). Packing switches nothing on or off
globally, so the server's encoder and decoder threads can share a packed model. A packed model is for inference
only: its packed weights are opaque and not in its state dict. Packed fp32 rows do not depend on the
batch at input widths 512 and 896; at 3584 and 4864 oneDNN's one-row kernel sums in another order
than its several-row one (a few ulps apart), as MKL's plain fp32 kernels do at every width.

Single-stream decoding in bf16 has a faster layout: plain weights, with PyTorch's own kernel for
single rows and oneDNN switched off for that one product only (``RowLinear``), so the cross-
attention over the audio keeps oneDNN's fast ``bmm``; the switch is process-wide, so other threads'
products may take PyTorch's kernels for that moment (the server never uses this layout). Whole
decoding steps (``benchmarks/decode_layouts.py``, AF2-0.5B, 30-s clip, 2 threads, same AMD EPYC),
ms/token at batch 1 / 8: packed 77-83 / 107, row layout 60-70 / 144-156 (the VM varies by ~10 %);
5-min clip, row layout 69.0 / 194. The tied head needs no second copy in that layout. So
``lay_out_for_cpu`` takes the batch the caller expects to decode: 1 (one question at a time:
``af2 ask``, ``af2.load()``'s default) gets the row layout, more (the server, ``af2 eval``, JSONL
batches) gets packed weights. A row-layout model gives a row decoded alone PyTorch's sums and a
row decoded in a batch oneDNN's (bf16 results a rounding apart); packed models give both the same.
Models left plain (int8, whose linears have their own kernel; other devices) keep oneDNN on for
every product: switching it off for whole single-row steps, as af2 once did, slowed the int8
model's cross-attention (5-min clip, batch 1: 93.0 ms/token with the switch, 74.4 without).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from af2.model.cpu_decode import use_decode_kernels

ROWS_HINT = 8  # the batch the packed layout is tuned for; measured as fast for 1 and 16 rows
# fp32 packed for one row (rows_hint=1) streams faster than for 8 (AF2-0.5B, 30-s clip, 2 threads, AMD EPYC
# with AVX-512: 122-134 against 125-150 ms/token at batch 1, benchmarks/decode_layouts.py; 24 x 896->4864:
# 26.5 against 22.3 GB/s) but slows batches (219-226 against 143-157 ms/token at batch 8) and prompts (first
# token 60 ms later): so fp32 is packed for the batch the caller expects (bf16's one-row layout is RowLinear).


def _unpacked_linears(model: nn.Module) -> list[nn.Linear]:
    """The linears of ``model`` that still hold a plain weight (plain or row layout)."""
    return [m for m in model.modules() if type(m) in _PLAIN]


def packs(dtype: torch.dtype) -> bool:
    """Whether this CPU packs weights of ``dtype``: oneDNN present, and bf16 with oneDNN's bf16 kernels or
    fp32 on an AVX-512 CPU (elsewhere packed fp32 is unmeasured and MKL's kernels stay)."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return dtype == torch.float32 and torch.backends.cpu.get_cpu_capability() == "AVX512"


def can_pack(model: nn.Module, device: torch.device) -> bool:
    """Whether packing applies: a CPU model whose linears' dtype this CPU packs (``packs``)."""
    weight = next((m.weight for m in _unpacked_linears(model)), None)
    return device.type == "cpu" and weight is not None and packs(weight.dtype)


class PackedLinear(nn.Module):
    """``nn.Linear`` whose weight is held in oneDNN's packed layout; same results as F.linear."""

    def __init__(self, linear: nn.Linear, rows_hint: int = ROWS_HINT):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rows_hint = rows_hint
        weight = linear.weight.detach()
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint), persistent=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def state_dict(self, *args, **kwargs):
        raise RuntimeError("a model with packed CPU weights is for inference only; save the model before packing")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-packed for {self.rows_hint} rows"


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


@contextmanager
def onednn_off():
    """oneDNN switched off for the products inside (a process-wide switch, restored on exit)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


class RowLinear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) for single-stream decoding: a single row goes
    through PyTorch's own matrix-vector kernel, at the read floor where oneDNN streams a plain
    weight at half the rate; several rows (prompts, batches) go through oneDNN as usual."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> RowLinear:
        row = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        row.weight = linear.weight  # the same Parameter objects: a tied head stays tied
        row.bias = linear.bias
        return row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() != x.shape[-1]:
            return F.linear(x, self.weight, self.bias)
        with onednn_off():
            return F.linear(x, self.weight, self.bias)


_PLAIN = (nn.Linear, RowLinear)  # the linear types that still hold a plain weight


def _replace_linears(lm: nn.Module, make, keep_head: bool = True) -> int:
    """Replace every plain (or row-layout) linear of ``lm`` by ``make(linear)``, except (``keep_head``)
    the output head of a language model."""
    # the head itself; a PackedHead keeps its plain linear for the table
    skip = {id(m) for m in lm.get_output_embeddings().modules()} if keep_head else set()
    targets = [(name, m) for name, m in lm.named_modules() if type(m) in _PLAIN and id(m) not in skip]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(lm.get_submodule(parent_name) if parent_name else lm, attr, make(module))
    return len(targets)


def pack_for_cpu(lm: nn.Module, rows_hint: int = ROWS_HINT) -> int:
    """Replace, in place, every ``nn.Linear`` of ``lm`` (decoder layers and cross-attention blocks)
    by a ``PackedLinear``, and its output head by a ``PackedHead``. Returns the number packed.
    A row-layout model (``lay_out_rows``) can be packed afterwards; a packed one cannot go back."""
    count = _replace_linears(lm, lambda m: PackedLinear(m, rows_hint))
    head = lm.get_output_embeddings()
    if type(head) in (nn.Linear, RowLinear):
        lm.set_output_embeddings(PackedHead(head, rows_hint))
    return count


def lay_out_rows(lm: nn.Module) -> int:
    """Replace, in place, every ``nn.Linear`` of ``lm``, its output head included, by a ``RowLinear``
    sharing its parameters. Returns the number replaced."""
    count = _replace_linears(lm, RowLinear.from_linear)
    head = lm.get_output_embeddings()
    if type(head) is nn.Linear:
        lm.set_output_embeddings(RowLinear.from_linear(head))
    return count


AUDIO_ROWS_HINT = 1024  # the audio path multiplies thousands of rows per call (HTSAT: 4,096 tokens a window)


def lay_out_audio_for_cpu(model: nn.Module, device: torch.device) -> int:
    """Pack for oneDNN, in place, the linears that only ever multiply audio: the audio encoder's
    (HTSAT), the audio transformation layers' and the cross-attention's key/value projections.
    Call it before ``lay_out_for_cpu``, which then leaves those key/value projections packed for
    audio rather than for a decoding step's rows. Returns the number packed (0 where this CPU does
    not pack the model's dtype, or for int8 models, whose audio path has its own linears).

    A plain weight is re-laid-out by oneDNN at every call, and fp32 products of plain weights go to
    MKL, which ran AMD's AVX-512 cores at half oneDNN's rate. Measured (AF2-0.5B, 2-vCPU AMD EPYC
    family 26, 2 threads, encode with cached audio K/V): bf16 5-min clip 6.6-7.5 -> 5.6 s and 30-s
    clip 0.70 -> 0.60 s, bit for bit the same features and K/V; fp32 30-s clip 2.6-2.7 -> 1.1-1.2 s,
    features within 6e-6 (oneDNN's sums against MKL's)."""
    audio = [model.audio_encoder, model.audio_transformer]
    if not can_pack(model, device):
        return 0
    count = sum(_replace_linears(part, lambda m: PackedLinear(m, AUDIO_ROWS_HINT), keep_head=False)
                for part in audio)
    for module in model.modules():
        attn_kv = getattr(module, "to_kv", None)  # af2.model.xattn.MaskedCrossAttention
        if type(attn_kv) in _PLAIN:
            module.to_kv = PackedLinear(attn_kv, AUDIO_ROWS_HINT)
            count += 1
    return count


LAYOUTS = ("rows", "packed")  # what a caller may ask lay_out_for_cpu for instead of its choice by batch


def layout_problem(layout: str, device: torch.device, dtype: torch.dtype | None) -> str | None:
    """Why ``layout`` (one a caller asks ``lay_out_for_cpu`` for) cannot apply to linears of ``dtype``
    (None: int8 or no plain linears) on ``device``, or None when it can."""
    if layout not in LAYOUTS:
        return f"unknown CPU layout {layout!r}; choose from {', '.join(LAYOUTS)} (or leave it out: chosen by batch)"
    if device.type != "cpu" or dtype is None or not packs(dtype) or (layout == "rows" and dtype != torch.bfloat16):
        what = "int8 or packed" if dtype is None else str(dtype).removeprefix("torch.")
        return (f"the {layout!r} CPU layout does not apply to {what} weights on {device}: 'rows' needs bfloat16 on a "
                "CPU with oneDNN's bf16 kernels, 'packed' bfloat16 there or float32 on an AVX-512 CPU")
    return None


def lay_out_for_cpu(lm: nn.Module, device: torch.device, decode_batch: int = 1, layout: str | None = None) -> str:
    """Lay out ``lm``'s linear weights for the batch the caller expects to decode, where measured
    faster: ``"rows"`` (bf16, one row at a time), ``"packed"`` (bf16 batches; fp32 on AVX-512
    CPUs) or ``"plain"`` (unchanged: other devices and dtypes, int8). On CPUs a batch
    (``decode_batch`` > 1) also switches the step's two attentions to ``af2.model.cpu_decode``'s
    batched kernels, int8 models included. Returns the layout chosen. Laying out again is a no-op,
    except rows -> packed (packed weights cannot go back to plain).

    ``layout`` overrides the choice by batch: ``"packed"`` (any packable model: bf16, or fp32 on
    AVX-512) or ``"rows"`` (bf16 only). Which single-row layout is faster depends on the machine, not
    only on its instruction set (``benchmarks/decode_layouts.py`` measures both): on one 2-vCPU AMD
    EPYC (family 26, AVX512-BF16, read stream 42.6 GB/s) AF2-0.5B bf16 steps at batch 1 took 60-70 ms
    in the row layout against 77-83 ms packed; on a VM of the same family with a 78-84 GB/s read
    stream, ``decode_layouts.py`` (gates open) measured 47.4 against 46.7 ms packed, and steps with
    the gates at zero 44-54 against 36-48 ms packed (that VM varies by 10-20 %). Timing the linears
    alone did not predict it (rows 10 % faster on 100 MB of the model's own weights), so af2 does not
    guess: the row layout stays the default for one row. Raises ``ValueError`` for a
    layout this model or device cannot take."""
    if layout is not None:
        plain = _unpacked_linears(lm)
        problem = layout_problem(layout, device, plain[0].weight.dtype if plain else None)
        if problem is None and layout == "rows" and cpu_layout(lm) == "packed":
            problem = "the 'rows' CPU layout is for bf16 models that are not packed yet"
        if problem is not None:
            raise ValueError(problem)
    if device.type == "cpu" and decode_batch > 1:  # whatever the weights (int8 too): af2.model.cpu_decode
        use_decode_kernels(lm)
    if cpu_layout(lm) == "packed" or not can_pack(lm, device):
        return cpu_layout(lm)
    bf16 = _unpacked_linears(lm)[0].weight.dtype == torch.bfloat16
    if layout == "rows" or (layout is None and bf16 and decode_batch <= 1):
        if cpu_layout(lm) == "plain":
            lay_out_rows(lm)
        return "rows"
    # bf16 packed for any batch is tuned for 8 rows (whole single-row steps ran 36-41 ms against 47-51
    # tuned for 1, on the faster-stream VM above); fp32: see ROWS_HINT
    pack_for_cpu(lm, rows_hint=1 if decode_batch <= 1 and not bf16 else ROWS_HINT)
    return "packed"


def cpu_layout(lm: nn.Module) -> str:
    """The layout ``lay_out_for_cpu`` gave ``lm``: ``"packed"``, ``"rows"`` or ``"plain"``."""
    head = lm.get_output_embeddings()
    return "packed" if isinstance(head, PackedHead) else "rows" if isinstance(head, RowLinear) else "plain"


def is_packed(lm: nn.Module) -> bool:
    return cpu_layout(lm) == "packed"
