"""Batched decoding on CPUs: the two attentions of a decoding step, each in the form that is fastest
for one query per row.

A decoding step at batch 8 (AF2-0.5B, bf16, 5-min clip, 2 threads; 2-vCPU AMD EPYC family 26 with
AVX512-BF16, read stream 47.5 GB/s) spent 34 ms in the audio cross-attention's two ``bmm`` calls (755 MB
of audio keys/values at 22 GB/s) and 4.5 ms in the text self-attention (PyTorch's CPU SDPA kernel: 251
us a layer for 8 rows x 14 heads over ~40 cached tokens; the same attention as two grouped matmuls:
44 us). So for batches:

* **text self-attention** with one query per row (a decoding step) is two matmuls over the key/value
  heads, the query heads of a group stacked as rows of one product (no ``repeat_kv`` copy), softmax
  in fp32, as SDPA computes it. Prompts (several queries) keep SDPA. Registered with Transformers'
  attention interface as ``"af2_cpu_decode"`` and chosen through the LM's config.
* **audio cross-attention** in bf16 is ``af2.model.xattn.audio_attention`` compiled by
  ``torch.compile`` (Inductor's C++ backend; sizes static but the batch and the number of audio
  tokens): one loop nest, parallel over (row, head), that fuses the two one-query products with the
  scaling and the softmax, one pass over K and one over V (24 layers x 8 rows x 8 heads x 1,920
  tokens, no padding: 36.7 -> 18.2-19.0 ms a step, 21 -> 40 GB/s against a 47.5 GB/s stream, same
  run; with every size symbolic it ran 30 ms). It compiles on first use (about 3 s, once per process
  for one row, for several, and with or without padding) and needs a C++ compiler; if compiling
  fails, af2 warns once and keeps the eager form. fp32 keeps the eager form: there Inductor
  substitutes PyTorch's flash-attention kernel, whose sums depend on a row's place in the batch.

Both give each bf16 row the same bits alone as in a batch of any size (tested), and differ from the
plain model's kernels by bf16 roundings (the same sums in another order; the fixture's greedy tokens
are unchanged). At batch 1 neither helps (SDPA and the two eager ``bmm`` are as fast for one row), so
``af2.model.cpu_pack.lay_out_for_cpu`` switches them on for the batched layout only (the server,
``af2 eval``, JSONL batches): whole bf16 steps at batch 8 with 5-min audio went from 88.8 to 78.1 ms
on the machine above.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from af2.model.xattn import MaskedCrossAttention, audio_attention

ATTN_NAME = "af2_cpu_decode"
log = logging.getLogger(__name__)


def text_decode_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs) -> tuple[torch.Tensor, None]:
    """Transformers' attention-function signature: query (B, H, T, d), key/value (B, Hkv, S, d), mask
    as SDPA's (boolean, True = attend, broadcastable to (B, 1, T, S)) or None → ((B, T, H, d), None).
    One query per row: grouped matmuls; anything else (prompts, dropout, soft-capping, sinks): SDPA."""
    B, H, T, d = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    plain = T == 1 and dropout == 0.0 and kwargs.get("softcap") is None and kwargs.get("s_aux") is None \
        and kwargs.get("position_bias") is None and not kwargs.get("output_attentions", False)
    if not plain or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = d ** -0.5 if scaling is None else scaling
    q = query.reshape(B, Hkv, H // Hkv, d)  # the query heads of a key/value group as rows of one product
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # (B, Hkv, G, S)
    if attention_mask is not None:
        rows = attention_mask.shape[0]  # B, or 1 when one mask serves every row
        mask = attention_mask.reshape(rows, 1, 1, S) if attention_mask.shape[1] == 1 else \
            attention_mask.reshape(rows, Hkv, H // Hkv, S)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = torch.matmul(scores.softmax(dim=-1).to(value.dtype), value)  # (B, Hkv, G, d)
    return out.reshape(B, 1, H, d), None


@functools.cache
def _compiled_audio_attention():
    # Sizes static except the batch and the number of audio tokens (marked per call below): with every
    # size symbolic (dynamic=True) Inductor's loops ran 30 ms a step where these ran 19 ms.
    log.info("compiling the batched audio cross-attention (once per process, a few seconds)")
    return torch.compile(audio_attention, dynamic=False)


def _mark_dynamic(t: torch.Tensor | None, *dims: int) -> None:
    if t is not None:
        for dim in dims:
            torch._dynamo.maybe_mark_dynamic(t, dim)


_COMPILE_FAILED: list[str] = []


def fused_audio_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          audio_mask: torch.Tensor | None) -> torch.Tensor:
    """``audio_attention`` compiled into fused reductions, for one query per row in bf16; several
    queries (a prompt), fp32, or a failed compile take the eager form. In bf16 Inductor writes one
    loop nest, parallel over (row, head) only, so each row's sums run in one order whatever the
    batch; in fp32 it substitutes PyTorch's flash-attention kernel, which splits a row's sums across
    threads by its position in the batch (a row alone and in a batch then differ in the last bits)."""
    if q.shape[-2] != 1 or q.dtype != torch.bfloat16 or _COMPILE_FAILED:
        return audio_attention(q, k, v, audio_mask)
    try:
        _mark_dynamic(q, 0)
        _mark_dynamic(k, 0, 2)
        _mark_dynamic(v, 0, 2)
        _mark_dynamic(audio_mask, 0, 3)
        return _compiled_audio_attention()(q, k, v, audio_mask)
    except Exception as exc:  # no C++ compiler, or Inductor cannot build here: same maths, eager
        _COMPILE_FAILED.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        warnings.warn(f"af2: could not compile the audio cross-attention for batched CPU decoding "
                      f"({_COMPILE_FAILED[0]}); using the eager form (the same maths, slower)", stacklevel=2)
        return audio_attention(q, k, v, audio_mask)


def use_decode_kernels(lm: nn.Module) -> None:
    """Switch ``lm`` (an AF2 model's LM, its layers wrapped with cross-attention) to the batched CPU
    decoding kernels above. Results differ from the plain kernels by bf16 roundings only."""
    AttentionInterface.register(ATTN_NAME, text_decode_attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    for config in {id(m.config): m.config for m in lm.modules() if hasattr(m, "config")}.values():
        if getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = ATTN_NAME
    for module in lm.modules():
        if isinstance(module, MaskedCrossAttention):
            module.kernel = fused_audio_attention


def precompile(lm: nn.Module, audio_tokens: int = 64) -> float:
    """Compile the batched audio cross-attention now for every kind of call decoding makes (one row
    and several, with and without padded audio), rather than on the first requests (about 3 s each).
    A server calls it at start-up. Returns the seconds spent: 0 when the kernels are off or the
    model is not bf16. ``audio_tokens``: the audio length of the dummy calls (any works: that size
    and the batch are dynamic)."""
    attn = next((m for m in lm.modules() if isinstance(m, MaskedCrossAttention)), None)
    if not decode_kernels_on(lm) or attn is None or attn.norm.weight.dtype != torch.bfloat16:
        return 0.0
    start = time.perf_counter()
    with torch.inference_mode():  # the tensors decoding passes: q a transposed view, K/V contiguous, a mask view
        for rows in (1, 2):
            q = torch.zeros(rows, 1, attn.heads, attn.dim_head, dtype=torch.bfloat16).transpose(1, 2)
            k, v = (torch.zeros(rows, attn.heads, 2 * audio_tokens, attn.dim_head, dtype=torch.bfloat16)
                    for _ in range(2))  # two tensors: the same one twice compiles a graph guarded on k is v
            real = torch.ones(rows, 2 * audio_tokens, dtype=torch.bool)
            real[:, audio_tokens:] = False
            for mask in (None, real[:, None, None, :]):
                fused_audio_attention(q, k, v, mask)
    return time.perf_counter() - start


def decode_kernels_on(lm: nn.Module) -> bool:
    """Whether ``use_decode_kernels`` was applied to ``lm``."""
    return getattr(lm.config, "_attn_implementation", None) == ATTN_NAME
