"""Whole decoding steps at AF2-0.5B shapes (random weights, gates open, 30-s clip) in each CPU weight
layout of ``af2.model.cpu_pack``, at batch 1 and 8, in one run: the measurement behind
``lay_out_for_cpu``'s choice (bf16: one-row layout for batch 1, packed for batches; fp32: packed for
one row or for eight). ms per token and the first token's delay (prompt of 40 tokens). Run it on a
quiet machine; each layout builds its own model in its own process:

    python benchmarks/decode_layouts.py [--threads 2] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

LAYOUTS = ("bf16-packed", "bf16-rows", "fp32-packed8", "fp32-packed1")
PROMPT = list(range(100, 140))


def child(layout: str, seconds: int, tokens: int) -> dict:
    from af2.config import af2_config
    from af2.generate import GenerationConfig, left_pad, stream_tokens
    from af2.model.af2 import AF2Model
    from af2.model.cpu_pack import lay_out_rows, pack_for_cpu

    dtype = torch.bfloat16 if layout.startswith("bf16") else torch.float32
    torch.manual_seed(0)
    model = AF2Model(af2_config("0.5b")).eval().to(dtype)
    for layer in model.decoder_layers:
        if layer.xattn is not None:  # gates open, so the audio is read
            layer.xattn.attn_gate.data.fill_(0.5)
            layer.xattn.ff_gate.data.fill_(0.5)
    if layout == "bf16-rows":
        lay_out_rows(model.lm)
    else:
        pack_for_cpu(model.lm, rows_hint=1 if layout == "fp32-packed1" else 8)
    out = {"layout": layout}
    with torch.inference_mode():
        windows = seconds // 10
        ctx = model.encode_audio(torch.rand(1, windows, 160_000, generator=torch.Generator().manual_seed(0)) - 0.5,
                                 torch.ones(1, windows), cache_kv=True)
        for batch in (1, 8):
            rows = ctx.select(torch.zeros(batch, dtype=torch.long))
            ids, attn = left_pad([PROMPT] * batch, 0)

            def run(n: int) -> tuple[float, float]:
                t0, times = time.perf_counter(), []
                for _ in stream_tokens(model, rows, ids, attn, GenerationConfig(max_new_tokens=n), (), 0):
                    times.append(time.perf_counter())
                return (times[-1] - times[0]) / (len(times) - 1), times[0] - t0

            run(3)  # warm-up
            per_token, first = min(run(tokens) for _ in range(3))  # best of three: the VM is noisy (±10%)
            out[f"b{batch}_ms_per_token"], out[f"b{batch}_first_token_ms"] = per_token * 1e3, first * 1e3
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seconds", type=int, default=30, help="clip length (a multiple of 10)")
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.seconds, args.tokens)))
        return 0
    print("| layout | batch 1 ms/token | batch 8 ms/token | first token ms (b1 / b8) |\n|---|---|---|---|")
    for layout in LAYOUTS:
        proc = subprocess.run([sys.executable, __file__, "--child", layout, "--threads", str(args.threads),
                               "--seconds", str(args.seconds), "--tokens", str(args.tokens)],
                              stdout=subprocess.PIPE, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {layout} | {r['b1_ms_per_token']:.1f} | {r['b8_ms_per_token']:.1f} | "
              f"{r['b1_first_token_ms']:.0f} / {r['b8_first_token_ms']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
