"""Batch-8 decoding cross-attention at AF2-0.5B shapes (24 layers, 8 heads x 64, 1,920 audio tokens per row,
bf16): the same attention written seven ways, each checked against af2's eager form
(``af2.model.xattn.audio_attention``), timed in one run: ms per decoding step over 24 layers, the K/V read
rate, and the read floor (a read-only stream measured in the same run). "af2 batched" is what batched
decoding on CPUs runs (``af2.model.cpu_decode.fused_audio_attention``: the eager form compiled by
Inductor; its first call compiles, outside the timings). Run it on a quiet machine:

    python benchmarks/xattn_layouts.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from af2.model.cpu_decode import fused_audio_attention
from af2.model.xattn import audio_attention
from floors import read_bandwidth

B, H, N, D, LAYERS = 8, 8, 1920, 64, 24


def k_major(q, k, v, mask):  # scores as K @ q (K rows contiguous)
    s = torch.matmul(k, q.transpose(-1, -2)).transpose(-1, -2).float() * D ** -0.5
    return torch.matmul(s.masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype), v)


def folded_bmm(q, k, v, mask):  # batch and heads folded into one bmm
    s = torch.bmm(q.reshape(B * H, 1, D), k.reshape(B * H, N, D).transpose(1, 2)).float() * D ** -0.5
    p = s.view(B, H, 1, N).masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype)
    return torch.bmm(p.view(B * H, 1, N), v.reshape(B * H, N, D)).view(B, H, 1, D)


def no_mask(q, k, v, mask):  # every row full: the two matmuls and the softmax alone
    s = torch.matmul(q, k.transpose(-1, -2)).float() * D ** -0.5
    return torch.matmul(s.softmax(-1).to(v.dtype), v)


def einsum(q, k, v, mask):
    s = torch.einsum("bhqd,bhnd->bhqn", q, k).float() * D ** -0.5
    return torch.einsum("bhqn,bhnd->bhqd", s.masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype), v)


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    ks = [torch.randn(B, H, N, D, dtype=torch.bfloat16) for _ in range(LAYERS)]
    vs = [torch.randn(B, H, N, D, dtype=torch.bfloat16) for _ in range(LAYERS)]
    q = torch.randn(B, 1, H, D, dtype=torch.bfloat16).transpose(1, 2)  # a view, as the block makes it
    mask = torch.ones(B, 1, 1, N, dtype=torch.bool)
    ways = {"af2 eager (two matmuls)": audio_attention, "af2 batched (compiled)": fused_audio_attention,
            "K-major scores": k_major, "folded bmm": folded_bmm, "no mask": no_mask, "einsum": einsum, "SDPA": sdpa}
    bandwidth = read_bandwidth()
    with torch.inference_mode():
        q = q.clone()
        for name, fn in ways.items():
            diff = (fn(q, ks[0], vs[0], mask).float() - audio_attention(q, ks[0], vs[0], mask).float()).abs().max()
            print(f"{name}: max |diff| vs af2 {diff.item():.2e}")
        best = {name: float("inf") for name in ways}
        for _ in range(args.repeats):
            for name, fn in ways.items():
                start = time.perf_counter()
                for k, v in zip(ks, vs):
                    fn(q, k, v, mask)
                best[name] = min(best[name], time.perf_counter() - start)
    nbytes = LAYERS * 2 * B * H * N * D * 2
    print(f"\nK/V per step: {nbytes / 1e6:.0f} MB; {args.threads} threads; best of {args.repeats}; read floor "
          f"{1000 * nbytes / bandwidth:.1f} ms ({bandwidth / 1e9:.1f} GB/s)")
    for name, seconds in best.items():
        print(f"{name:24s} {1000 * seconds:7.1f} ms/step  {nbytes / seconds / 1e9:5.1f} GB/s  "
              f"{seconds * bandwidth / nbytes:4.2f}x floor")


if __name__ == "__main__":
    main()
