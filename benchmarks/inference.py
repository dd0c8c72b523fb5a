"""Inference benchmark at the real AF2-0.5B shapes (random weights, no download).

One run measures, on this machine:
  floors, before any model exists: the CPU's features (AVX-512, AVX512-BF16, AMX), fp32 and bf16
    matmul rates, and a read-only memory stream (the bandwidth a decoding step can use);
  loading: time and peak RSS to load our format and NVIDIA's layout (aliases included) in
    each dtype, each in its own process;
  the optimised path in fp32, bf16 and int8 (int8 linear weights), for a 30-s and a 5-min clip, at
    batch 1 and 8: encode time, time to first token, ms/token, tokens/s, peak RSS, and at batch 8
    the share of a decoding step spent on cross-attention over the audio tokens;
  a reference path in the same process: windows encoded one at a time and the audio keys/values
    recomputed in every layer at every step, as NVIDIA's code does.
Every figure is printed with its ratio to its floor and to the reference path.

    python benchmarks/inference.py                   # the full run (about 15-25 min on 2 cores)
    python benchmarks/inference.py --quick           # smaller shapes, 30-s clip only, < 3 min
    python benchmarks/inference.py --readme FILE.json   # rewrite README's table from saved results
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from af2.checkpoint.folder import load_pretrained, save_pretrained
from af2.checkpoint.official import build_official, ours_to_official
from af2.checkpoint.weights import tied_aliases
from af2.config import af2_config, apply_overrides, config_to_dict
from af2.generate import GenerationConfig, left_pad, stream_tokens
from af2.inference import default_encoder_chunk, resolve_dtype
from af2.model.af2 import AF2Model, TOKENS_PER_WINDOW
from af2.model.cpu_pack import lay_out_audio_for_cpu, lay_out_for_cpu
from af2.model.xattn import AudioContext
from floors import cpu_features, cpu_slug, matmul_rate, read_bandwidth
from readme_block import rewrite_block

REPO = Path(__file__).resolve().parents[1]
DTYPES = ("fp32", "bf16", "int8")
API_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}
PROMPT = [151665] + list(range(1000, 1018)) + [151668]  # <audio> + 18 words + <SEP>
PAD = 151667
QUICK = {"htsat.embed_dim": 96, "htsat.depths": (2, 2, 4, 2), "audio_transformer.d_inner": 1024,
         "lm": {**af2_config("0.5b").lm, "hidden_size": 448, "intermediate_size": 2432, "num_hidden_layers": 8,
                "num_attention_heads": 7, "num_key_value_heads": 1}}
README_START, README_END = "<!-- benchmark table: start -->", "<!-- benchmark table: end -->"


# ------------------------------------------------------------------------------------------------
# machine and floors


def measure_floors(quick: bool) -> dict:
    n = 1024 if quick else 2048
    return {"fp32_flops_per_s": matmul_rate(torch.float32, n), "bf16_flops_per_s": matmul_rate(torch.bfloat16, n),
            "read_bytes_per_s": read_bandwidth((256 if quick else 1024) << 20)}


# ------------------------------------------------------------------------------------------------
# the random model on disk, in both layouts


def bench_config(quick: bool):
    cfg = af2_config("0.5b")
    return apply_overrides(cfg, QUICK) if quick else cfg


def official_layout(model: AF2Model) -> dict[str, torch.Tensor]:
    """Our state dict under NVIDIA's names, with its alias registrations (as released)."""
    tied = tied_aliases(model)
    state = {ours_to_official(k): v for k, v in model.state_dict().items() if k not in tied}
    for key, value in list(state.items()):
        alias = re.sub(r"^lang_encoder\.model\.layers\.(\d+)\.decoder_layer\.", r"lang_encoder.old_decoder_blocks.\1.",
                       key)
        alias = re.sub(r"^lang_encoder\.model\.layers\.(\d+)\.gated_cross_attn_layer_sound\.",
                       r"lang_encoder.gated_cross_attn_layers_sound.\1.", alias)
        if alias != key:
            state[alias] = value
    state["lang_encoder.lm_head.weight"] = state["lang_encoder.model.embed_tokens.weight"]
    return state


def write_models(cfg, folder: Path) -> None:
    """A random AF2 (gates open, so audio matters) in our format and in NVIDIA's layout."""
    torch.manual_seed(0)
    model = AF2Model(cfg).eval()
    with torch.no_grad():
        for layer in model.decoder_layers:
            layer.xattn.attn_gate.fill_(0.5)
            layer.xattn.ff_gate.fill_(0.5)
    save_pretrained(model, folder / "ours")
    (folder / "official" / "safe_ckpt").mkdir(parents=True)
    chunks, current, size = 0, {}, 0
    for key, value in official_layout(model).items():  # ~1 GB chunks; aliases as their own copies
        current[key] = value.detach().clone().contiguous()
        size += value.numel() * value.element_size()
        if size > 1 << 30:
            save_file(current, str(folder / "official" / "safe_ckpt" / f"model_chunk_{chunks}.safetensors"))
            chunks, current, size = chunks + 1, {}, 0
    save_file(current, str(folder / "official" / "safe_ckpt" / f"model_chunk_{chunks}.safetensors"))
    (folder / "official" / "safe_ckpt" / "metadata.json").write_text(
        json.dumps({f"model_chunk_{i}": {} for i in range(chunks + 1)}))


# ------------------------------------------------------------------------------------------------
# measurements (each child process runs one dtype, so each peak RSS is its own)


def rss_gib(field: str = "VmHWM") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def weight_bytes(model: AF2Model, decode_only: bool = False) -> int:
    """Bytes of weights (int8 codes and scales included); ``decode_only``: what one decoding
    step reads (the LM, the cross-attention blocks without ``to_kv`` whose output is cached)."""
    seen, total = set(), 0
    root = model.lm if decode_only else model
    for name, t in [*root.named_parameters(), *root.named_buffers()]:
        key = id(t) if t.is_mkldnn else t.data_ptr()  # packed oneDNN weights (cpu_pack) have no data_ptr
        if key in seen or (decode_only and (".to_kv." in name or "inv_freq" in name)):
            continue
        if decode_only and name.endswith("lm_head.packed.packed"):
            continue  # the head's packed copy: a step reads it or the plain table, not both
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def child_load(dtype_name: str, layout: str, folder: Path, cfg_dict: dict) -> dict:
    from af2.config import AF2Config, config_from_dict

    base = rss_gib("VmRSS")
    reset_peak_rss()
    torch_dtype, int8 = resolve_dtype(API_DTYPE[dtype_name], "cpu")
    t = time.perf_counter()
    if layout == "ours":  # int8: quantized while read
        model = load_pretrained(folder / "ours", torch_dtype, int8=int8)
    else:
        model = build_official(folder / "official", config_from_dict(AF2Config, cfg_dict), torch_dtype, int8)
    load_s = time.perf_counter() - t
    nbytes = weight_bytes(model)
    return {"dtype": dtype_name, "layout": layout, "load_s": load_s, "rss_before_gib": base,
            "load_peak_rss_gib": rss_gib(), "weights_gib": nbytes / 2**30,
            "peak_over_weights": (rss_gib() - base) / (nbytes / 2**30)}


def decode_steps(model, ctx, batch: int, tokens: int) -> list[float]:
    ids, attn = left_pad([PROMPT] * batch, PAD)
    times = []
    for _ in stream_tokens(model, ctx, ids, attn, GenerationConfig(max_new_tokens=tokens), (), PAD):
        times.append(time.perf_counter())
    return times


def per_token(times: list[float]) -> float:
    return (times[-1] - times[0]) / max(len(times) - 1, 1)


def best_per_token(model, ctx, batch: int, tokens: int, first: list[float] | None = None, runs: int = 3) -> float:
    """Seconds per token, the best of ``runs`` decodes (``first``: one already timed), as the floors
    are the best of several: one decode of 24 tokens varied by up to 10 % on a shared VM."""
    timed = [per_token(first)] if first is not None else []
    timed += [per_token(decode_steps(model, ctx, batch, tokens)) for _ in range(runs - len(timed))]
    return min(timed)


def encoder_flops(cfg, windows: int) -> int:
    with torch.device("meta"):
        meta = AF2Model(cfg).eval()
        mel = torch.zeros(windows, cfg.audio.frames_per_window, cfg.audio.n_mels)
        mask = torch.ones(1, windows * TOKENS_PER_WINDOW, dtype=torch.bool)
        with FlopCounterMode(display=False) as counter:
            feats = meta.audio_transformer(meta.audio_encoder(mel).reshape(1, -1, cfg.audio_dim), mask)
            for layer in meta.decoder_layers:
                if layer.xattn is not None:
                    layer.xattn.attn.keys_values(feats)
    return counter.get_total_flops()


def kv_bytes(ctx: AudioContext) -> int:
    return sum(t.numel() * t.element_size() for pair in ctx.kv if pair is not None for t in pair)


def child_run(dtype_name: str, folder: Path, clips: list[int], tokens: int, ref_tokens: int, batch: int) -> dict:
    """Every clip at ``batch`` 1 or 8, the weights laid out as ``af2.load(decode_batch=batch)`` lays
    them out (``af2.model.cpu_pack``: bf16 decodes single rows from plain weights and batches from
    packed ones; fp32 is packed for one row or for eight): one-question use (with the reference
    path) or what the server and ``af2 eval`` get. Each batch runs in its own process, so its peak
    RSS is its own."""
    torch_dtype, int8 = resolve_dtype(API_DTYPE[dtype_name], "cpu")  # what af2.load does, minus the tokenizer
    t = time.perf_counter()
    model = load_pretrained(folder / "ours", torch_dtype, int8=int8)
    lay_out_audio_for_cpu(model, torch.device("cpu"))
    layout = lay_out_for_cpu(model.lm, torch.device("cpu"), decode_batch=batch)  # int8: plain
    load_s, runs = time.perf_counter() - t, []
    chunk = default_encoder_chunk("cpu")
    with torch.inference_mode():  # warm-up: kernels chosen and buffers allocated once, outside the timings
        # (the encoder at the chunk size the timed encode uses: a first call at a new shape cost up to 3 s)
        model.encode_audio(torch.zeros(1, chunk, 160_000), torch.ones(1, chunk), cache_kv=True, chunk=chunk)
        warm = model.encode_audio(torch.zeros(1, 1, 160_000), torch.ones(1, 1), cache_kv=True)
        decode_steps(model, warm.select(torch.zeros(batch, dtype=torch.long)), batch, 2)
    for seconds in clips:
        windows = math.ceil(seconds / 10)
        audio = torch.rand(1, windows, 160_000, generator=torch.Generator().manual_seed(0)) - 0.5
        mask = torch.ones(1, windows)
        with torch.inference_mode():
            encodes = []
            for _ in range(2):  # best of two (this VM's neighbours move a single run by 10-30 %)
                ctx = None  # the first encode's context is not part of the second's peak RSS
                reset_peak_rss()
                t0 = time.perf_counter()
                ctx = model.encode_audio(audio, mask, cache_kv=True, chunk=chunk)
                encodes.append(time.perf_counter() - t0)
            encode_s = min(encodes)
            if batch == 8:
                # Eight rows of this clip (the encoder is per window, so 8 clips cost 8x to encode);
                # and the same with one window each, to price cross-attention over the audio.
                eight = ctx.select(torch.zeros(8, dtype=torch.long))
                run = {"seconds": seconds, "b8_s_per_token": best_per_token(model, eight, 8, tokens)}
                n = TOKENS_PER_WINDOW
                short = AudioContext(eight.features[:, :n], eight.mask[:, :n], tuple(
                    None if p is None else tuple(t[:, :, :n].contiguous() for t in p) for p in eight.kv))
                run.update(b8_one_window_s_per_token=best_per_token(model, short, 8, tokens),
                           b8_peak_rss_gib=rss_gib(), b8_layout=layout)
                runs.append(run)
                continue
            one = decode_steps(model, ctx, 1, tokens)
            run = {"seconds": seconds, "windows": windows, "encode_s": encode_s, "first_token_s": one[0] - t0,
                   "b1_s_per_token": best_per_token(model, ctx, 1, tokens, first=one), "b1_peak_rss_gib": rss_gib(),
                   "kv_bytes_per_row": kv_bytes(ctx),
                   "encode_flops": encoder_flops(model.cfg, windows), "b1_layout": layout}
            full = mask.bool().repeat_interleave(TOKENS_PER_WINDOW, dim=1)
            ref_encodes = []
            for _ in range(2):  # the reference path: windows one by one, no cached audio K/V; best of two
                t0 = time.perf_counter()
                feats = torch.cat([model.encode_windows(audio[:, i:i + 1], mask[:, i:i + 1])
                                   for i in range(windows)], 1)
                ref_ctx = AudioContext(model.audio_transformer(feats, full), full)
                ref_encodes.append(time.perf_counter() - t0)
            run["ref_encode_s"] = min(ref_encodes)
            ref = decode_steps(model, ref_ctx, 1, ref_tokens)
            run.update(ref_first_token_s=ref[0] - t0, ref_s_per_token=per_token(ref))
        runs.append(run)
    return {"dtype": dtype_name, "compute_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "step_weight_bytes": weight_bytes(model, decode_only=True), "weights_gib": weight_bytes(model) / 2**30,
            "load_s": load_s, "runs": runs}


# ------------------------------------------------------------------------------------------------
# report


def derive(result: dict, floors: dict) -> list[dict]:
    """One row per (dtype, clip, batch) with every figure and its ratios to floor and reference."""
    rows = []
    bw = floors["read_bytes_per_s"]
    rate = floors["bf16_flops_per_s"] if result["compute_dtype"] == "bfloat16" else floors["fp32_flops_per_s"]
    for r in result["runs"]:
        for batch in (1, 8):
            step = r[f"b{batch}_s_per_token"]
            step_bytes = result["step_weight_bytes"] + batch * r["kv_bytes_per_row"]
            step_floor = step_bytes / bw
            encode_floor = r["encode_flops"] / rate
            row = {"dtype": result["dtype"], "seconds": r["seconds"], "batch": batch, "ms_per_token": step * 1e3,
                   "tokens_per_s": batch / step, "decode_over_floor": step / step_floor,
                   "decode_speedup_vs_ref": r["ref_s_per_token"] / step if batch == 1 else None,
                   "peak_rss_gib": r[f"b{batch}_peak_rss_gib"], "layout": r.get(f"b{batch}_layout", "packed"),
                   "rss_over_weights": r[f"b{batch}_peak_rss_gib"] / r.get(f"b{batch}_weights_gib", result["weights_gib"])}
            if batch == 1:
                row.update(encode_s=r["encode_s"], encode_over_floor=r["encode_s"] / encode_floor,
                           encode_speedup_vs_ref=r["ref_encode_s"] / r["encode_s"], first_token_s=r["first_token_s"],
                           first_token_over_floor=r["first_token_s"] / (encode_floor + step_floor),
                           first_token_speedup_vs_ref=r["ref_first_token_s"] / r["first_token_s"])
            else:
                # the same ratio if both steps ran at the read floor (weights read once a step, K/V once a row):
                # int8 with 5-min audio, 8 x (671 + 94) / (671 + 8 x 94) MB = 4.3x; bf16 5.5x
                one_row = result["step_weight_bytes"] + r["kv_bytes_per_row"]
                row.update(b8_over_b1=(batch / step) * r["b1_s_per_token"],
                           b8_over_b1_at_floor=batch * one_row / step_bytes,
                           audio_share=1 - r["b8_one_window_s_per_token"] / step)
            rows.append(row)
    return rows


def _f(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table(results: dict) -> str:
    lines = ["| dtype | clip | batch | weights | encode s (×floor, ref/opt) | first token s (×floor, ref/opt) | "
             "ms/token (×floor, ref/opt) | tokens/s | peak RSS GiB (×weights) | batch note |", "|---" * 10 + "|"]
    for result in results["runs"]:
        for row in derive(result, results["floors"]):
            clip = f"{row['seconds'] // 60} min" if row["seconds"] >= 60 else f"{row['seconds']} s"
            note = (f"{row['b8_over_b1']:.1f}× batch-1 tokens/s (at the read floor: "
                    f"{row['b8_over_b1_at_floor']:.1f}×); audio x-attn {max(row['audio_share'], 0):.0%} of a step"
                    if row["batch"] == 8 else "")
            enc = (f"{row['encode_s']:.2f} ({row['encode_over_floor']:.2f}×, {row['encode_speedup_vs_ref']:.1f}×)"
                   if row["batch"] == 1 else "(8× batch 1)")
            ttft = (f"{row['first_token_s']:.2f} ({row['first_token_over_floor']:.2f}×, "
                    f"{row['first_token_speedup_vs_ref']:.1f}×)" if row["batch"] == 1 else "—")
            ref = f", {row['decode_speedup_vs_ref']:.1f}×" if row["decode_speedup_vs_ref"] else ""
            lines.append(f"| {row['dtype']} | {clip} | {row['batch']} | {row['layout']} | {enc} | {ttft} | "
                         f"{row['ms_per_token']:.0f} "
                         f"({row['decode_over_floor']:.2f}×{ref}) | {row['tokens_per_s']:.1f} | "
                         f"{row['peak_rss_gib']:.2f} ({row['rss_over_weights']:.2f}×) | {note} |")
    lines += ["", "| dtype | layout | load s | peak RSS during load GiB | weights GiB | (peak − before) / weights |",
              "|---" * 6 + "|"]
    for load in results["loads"]:
        lines.append(f"| {load['dtype']} | {load['layout']} | {load['load_s']:.1f} | {load['load_peak_rss_gib']:.2f} | "
                     f"{load['weights_gib']:.2f} | {load['peak_over_weights']:.2f}× |")
    c, fl = results["cpu"], results["floors"]
    generation = f" ({c['generation']})" if c.get("generation") else ""
    lines += ["", f"Machine: {c['name']}{generation}, {c['cores']} cores, {results['threads']} threads; AVX-512 {c['avx512']}, "
              f"AVX512-BF16 {c['avx512_bf16']}, AMX {c['amx']} (torch {c['torch']}, {c['torch_capability']}). "
              f"Floors measured in the same run: fp32 matmul {fl['fp32_flops_per_s'] / 1e9:.0f} GFLOP/s, bf16 matmul "
              f"{fl['bf16_flops_per_s'] / 1e9:.0f} GFLOP/s, read stream {fl['read_bytes_per_s'] / 1e9:.1f} GB/s. "
              f"Decode floor = (weights read per step + audio K/V) / read stream; encode floor = encoder FLOPs / "
              f"matmul rate; ref/opt = reference path time / optimised time. Weights: the layout of the LM's "
              f"linears (af2.model.cpu_pack): rows = plain, PyTorch's kernel for single rows (af2.load's default, "
              f"one question at a time); packed = oneDNN-packed (the server, af2 eval); plain = unchanged. "
              f"Shapes: {results['shapes']}."]
    return "\n".join(lines)


def rewrite_readme(results: dict) -> None:
    rewrite_block(README_START, README_END, table(results))


# ------------------------------------------------------------------------------------------------


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller shapes, 30-s clip only, fewer tokens: < 3 min")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per decode (default 24, quick 8)")
    ap.add_argument("--ref-tokens", type=int, default=3, help="new tokens on the (slow) reference path")
    ap.add_argument("--clips", help="clip lengths in seconds (default 30,300; quick 30)")
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results-<cpu>[-quick].json)")
    ap.add_argument("--merge", action="store_true",
                    help="run in parts: keep the other dtypes' results already in --out (this run's floors kept)")
    ap.add_argument("--readme", type=Path, metavar="RESULTS", help="only rewrite README's table from RESULTS")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.readme:
        rewrite_readme(json.loads(args.readme.read_text()))
        return 0
    if args.child:
        kind, dtype_name, folder, extra = args.child[0], args.child[1], Path(args.child[2]), json.loads(args.child[3])
        out = (child_load(dtype_name, extra["layout"], folder, extra["cfg"]) if kind == "load"
               else child_run(dtype_name, folder, extra["clips"], extra["tokens"], extra["ref_tokens"],
                              extra["batch"]))
        print(json.dumps(out))
        return 0
    dtypes = args.dtypes.split(",")
    if set(dtypes) - set(DTYPES):
        ap.error(f"unknown dtype in {args.dtypes!r}; choose from {DTYPES}")
    cpu = cpu_features()
    floors = measure_floors(args.quick)  # before any model exists
    print(f"{cpu['name']}: floors {json.dumps({k: f'{v:.3g}' for k, v in floors.items()})}", file=sys.stderr)
    cfg = bench_config(args.quick)
    tokens = args.tokens or (8 if args.quick else 24)
    clips = [int(c) for c in args.clips.split(",")] if args.clips else [30] if args.quick else [30, 300]
    common = ["--threads", str(args.threads)]
    results = {"cpu": cpu, "floors": floors, "threads": args.threads, "quick": args.quick,
               "shapes": "reduced (--quick)" if args.quick else "AF2-0.5B", "loads": [], "runs": []}
    with tempfile.TemporaryDirectory(prefix="af2-bench-") as tmp:
        folder = Path(tmp)
        write_models(cfg, folder)
        for name in dtypes:
            for layout in ("ours", "official"):
                spec = json.dumps({"layout": layout, "cfg": config_to_dict(cfg)})
                results["loads"].append(_child([*common, "--child", "load", name, str(folder), spec]))
                print(f"  load {name} {layout}: {results['loads'][-1]}", file=sys.stderr, flush=True)
            spec = {"clips": clips, "tokens": tokens, "ref_tokens": args.ref_tokens}
            run = _child([*common, "--child", "run", name, str(folder), json.dumps({**spec, "batch": 1})])
            eight = _child([*common, "--child", "run", name, str(folder), json.dumps({**spec, "batch": 8})])
            for row, row8 in zip(run["runs"], eight["runs"]):
                row.update({k: v for k, v in row8.items() if k.startswith("b8_")}, b8_weights_gib=eight["weights_gib"])
            results["runs"].append(run)
            print(f"  run {name}: {results['runs'][-1]['runs']}", file=sys.stderr, flush=True)
    out = args.out or REPO / "benchmarks" / f"results-{cpu_slug()}{'-quick' if args.quick else ''}.json"
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        results["loads"] = [r for r in old["loads"] if r["dtype"] not in dtypes] + results["loads"]
        results["runs"] = [r for r in old["runs"] if r["dtype"] not in dtypes] + results["runs"]
        results["runs"].sort(key=lambda r: DTYPES.index(r["dtype"]))
        results["loads"].sort(key=lambda r: DTYPES.index(r["dtype"]))
    out.write_text(json.dumps(results, indent=1))
    print(f"\n{table(results)}\n\nraw results: {out}; README table: python benchmarks/inference.py --readme {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
