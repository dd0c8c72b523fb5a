"""Inference benchmark at the real AF2-0.5B shapes (random weights, no download).

For a 5-minute and a 30-second clip it measures, in one run:
  (a) the optimised path: all windows in one batched encoder pass, cross-attention keys/values
      over the audio computed once per request, KV-cached decoding;
  (b) a reference path: windows encoded one at a time and the audio keys/values recomputed in
      every layer at every decoding step (what the official code does);
  (c) floors: encoder FLOPs / a measured matmul rate, and bytes of weights read per decoding
      step / a measured copy bandwidth;
and prints encode time, time to first token, per-token decode time, tokens/s, peak RSS and the
ratios optimised/reference and optimised/floor, in fp32 and bf16.

    python benchmarks/inference.py                 # fp32 and bf16, ~10 min on 2 CPU cores
    python benchmarks/inference.py --dtypes fp32 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from af2.config import af2_config
from af2.generate import GenerationConfig, left_pad, stream_tokens
from af2.inference import default_encoder_chunk
from af2.model.af2 import AF2Model, TOKENS_PER_WINDOW
from af2.model.xattn import AudioContext

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROMPT = [151665] + list(range(1000, 1018)) + [151668]  # <audio> + 18 words + <SEP>


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_gib() -> float:
    """Peak resident memory since the last ``reset_peak_rss`` (VmHWM), else of the whole process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def reset_peak_rss() -> None:
    """Restart the VmHWM high-water mark (Linux), so each run reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` dense matmul throughput in FLOP/s, through ``F.linear`` (x @ Wᵀ, the layout
    every layer of the model uses; some CPUs' bf16 kernels are far slower for other layouts)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.nn.functional.linear(a, b)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        torch.nn.functional.linear(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Best-of-``reps`` ``copy_`` of a 1 GiB tensor, in bytes moved (read + write) per second."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def encoder_flops(model: AF2Model, windows: int) -> int:
    """FLOPs of the audio path for ``windows`` windows, counted on the meta device."""
    with torch.device("meta"):
        meta = AF2Model(model.cfg).eval()
        mel = torch.zeros(windows, model.cfg.audio.frames_per_window, model.cfg.audio.n_mels)
        mask = torch.ones(1, windows * TOKENS_PER_WINDOW, dtype=torch.bool)
        with FlopCounterMode(display=False) as counter:
            feats = meta.audio_transformer(meta.audio_encoder(mel).reshape(1, -1, model.cfg.audio_dim), mask)
            for layer in meta.decoder_layers:
                if layer.xattn is not None:
                    layer.xattn.attn.keys_values(feats)
    return counter.get_total_flops()


def decode_weight_bytes(model: AF2Model) -> int:
    """Bytes of weights one decoding step must read: the LM (embedding table once, as the tied
    head), and every cross-attention block except ``to_kv`` (its output is cached)."""
    total = 0
    for name, p in model.lm.named_parameters():
        if ".xattn.attn.to_kv." in name:
            continue
        total += p.numel() * p.element_size()
    return total


def run_path(model: AF2Model, seconds: float, device: torch.device, new_tokens: int, optimised: bool) -> dict:
    windows = min(30, max(1, int(-(-seconds // 10))))
    g = torch.Generator().manual_seed(0)
    audio = (torch.rand(1, windows, 160_000, generator=g) - 0.5).to(device)
    mask = torch.ones(1, windows, device=device)
    ids, attn = left_pad([PROMPT], 151667, device)
    gen = GenerationConfig(max_new_tokens=new_tokens)
    reset_peak_rss()
    with torch.inference_mode():
        sync(device)
        t0 = time.perf_counter()
        if optimised:
            ctx = model.encode_audio(audio, mask, cache_kv=True, chunk=default_encoder_chunk(device))
        else:  # one window at a time, and no cached audio keys/values
            tokens = torch.cat([model.encode_windows(audio[:, i:i + 1], mask[:, i:i + 1]) for i in range(windows)], 1)
            full = mask.bool().repeat_interleave(TOKENS_PER_WINDOW, dim=1)
            ctx = AudioContext(model.audio_transformer(tokens, full), full)
        sync(device)
        t_enc = time.perf_counter()
        steps = []
        for _tok, _live in stream_tokens(model, ctx, ids, attn, gen, stop_ids=(), pad_id=151667):
            sync(device)
            steps.append(time.perf_counter())
    first = steps[0] - t0
    per_token = (steps[-1] - steps[0]) / max(len(steps) - 1, 1)
    return {"seconds": seconds, "windows": windows, "encode_s": t_enc - t0, "first_token_s": first,
            "decode_s_per_token": per_token, "tokens_per_s": 1 / per_token, "new_tokens": len(steps),
            "peak_rss_gib": peak_rss_gib()}


def bench_dtype(dtype_name: str, device: torch.device, new_tokens: int, ref_tokens: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    # Floors first: the 2 GiB bandwidth buffers are freed before the model exists.
    rate = matmul_rate(DTYPES[dtype_name], device)
    bandwidth = copy_bandwidth(device)
    t = time.perf_counter()
    model = AF2Model(af2_config("0.5b")).eval()
    with torch.no_grad():  # open the gates so the audio path is not a no-op
        for layer in model.decoder_layers:
            layer.xattn.attn_gate.fill_(0.5)
            layer.xattn.ff_gate.fill_(0.5)
    model = model.to(device=device, dtype=DTYPES[dtype_name])
    build_s = time.perf_counter() - t
    flops_5min = encoder_flops(model, 30)
    flops_30s = encoder_flops(model, 3)
    build_peak = peak_rss_gib()
    weight_bytes = decode_weight_bytes(model)
    out = {"dtype": dtype_name, "device": str(device), "threads": threads, "build_s": build_s,
           "build_peak_rss_gib": build_peak,
           "matmul_flops_per_s": rate, "copy_bytes_per_s": bandwidth, "decode_weight_bytes": weight_bytes,
           "runs": []}
    for seconds, flops in ((300, flops_5min), (30, flops_30s)):
        for optimised in (True, False):
            r = run_path(model, seconds, device, new_tokens if optimised else ref_tokens, optimised)
            r.update(path="optimised" if optimised else "reference", encode_flops=flops,
                     encode_floor_s=flops / rate, decode_floor_s=weight_bytes / bandwidth)
            out["runs"].append(r)
            print(f"  {dtype_name} {seconds:>3}s {r['path']:<9} encode {r['encode_s']:.2f}s  "
                  f"first token {r['first_token_s']:.2f}s  {r['decode_s_per_token'] * 1000:.0f} ms/token  "
                  f"RSS {r['peak_rss_gib']:.2f} GiB", file=sys.stderr, flush=True)
    return out


def table(results: list[dict]) -> str:
    lines = ["| dtype | clip | path | encode s | first token s | ms/token | tokens/s | peak RSS GiB | "
             "decode ref/opt | decode opt/floor | encode opt/floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        runs = {(r["seconds"], r["path"]): r for r in res["runs"]}
        for (seconds, path), r in runs.items():
            ref = runs[(seconds, "reference")]
            speedup = ref["decode_s_per_token"] / r["decode_s_per_token"] if path == "optimised" else 1.0
            lines.append(
                f"| {res['dtype']} | {seconds // 60 and f'{seconds // 60} min' or f'{seconds} s'} | {path} | "
                f"{r['encode_s']:.2f} | {r['first_token_s']:.2f} | {r['decode_s_per_token'] * 1000:.0f} | "
                f"{r['tokens_per_s']:.1f} | {r['peak_rss_gib']:.2f} | "
                f"{speedup:.1f}× | {r['decode_s_per_token'] / r['decode_floor_s']:.2f}× | "
                f"{r['encode_s'] / r['encode_floor_s']:.2f}× |")
    floors = [f"{res['dtype']}: matmul {res['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, copy "
              f"{res['copy_bytes_per_s'] / 1e9:.1f} GB/s, encoder 5 min {res['runs'][0]['encode_flops'] / 1e12:.2f} "
              f"TFLOP → floor {res['runs'][0]['encode_floor_s']:.1f} s, weights per step "
              f"{res['decode_weight_bytes'] / 1e9:.2f} GB → floor {res['runs'][0]['decode_floor_s'] * 1000:.0f} ms, "
              f"peak RSS while building the random model {res['build_peak_rss_gib']:.2f} GiB"
              for res in results]
    return "\n".join(lines) + "\n\nFloors measured in the same run: " + "; ".join(floors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--tokens", type=int, default=24, help="new tokens on the optimised path")
    ap.add_argument("--ref-tokens", type=int, default=4, help="new tokens on the (slow) reference path")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one dtype in this process
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(bench_dtype(args.one, device, args.tokens, args.ref_tokens, args.threads)))
        return 0
    results = []
    for name in args.dtypes.split(","):
        if name not in DTYPES:
            ap.error(f"unknown dtype {name!r}; choose from {sorted(DTYPES)}")
        # One process per dtype so that each peak RSS is its own.
        cmd = [sys.executable, __file__, "--one", name, "--device", args.device, "--threads", str(args.threads),
               "--tokens", str(args.tokens), "--ref-tokens", str(args.ref_tokens)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | head -1"], capture_output=True, text=True).stdout
    print(f"\nAF2-0.5B shapes, random weights, {args.device} ({cpu.split(':')[-1].strip() or 'unknown CPU'}), "
          f"{args.threads} threads, torch {torch.__version__}\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
