"""Which CPU kernel streams a decoding step's weights fastest: every candidate, AF2-0.5B's shapes.

A decoding step multiplies M rows (1 at batch 1, 8 at batch 8) by every linear weight of the LM:
24 layers x (q, k, v, o, gate, up, down + the cross-attention's to_q, to_out, ff1, ff2) and the
LM head, each a distinct weight, so the weights stream from memory as they do in a real step. For
each candidate kernel the script runs that whole sequence (265 calls), times every call, and
prints per shape and in total: ms per step, GB/s of weight bytes, and the ratio to the read
floor (weight bytes / a read-only stream measured in the same run, ``x.sum()`` over 1 GiB).

    python benchmarks/linear_kernels.py                       # all candidates, 2 threads, M = 1 and 8
    python benchmarks/linear_kernels.py --threads 1 --only bf16.packed,int8.pack_bf16
    python benchmarks/linear_kernels.py --skip-unfused --fused-only bf16.packed   # q/k/v, gate/up fused

Every candidate at both row counts takes about 3 minutes on 2 cores (building 0.67 B weights in
four forms is 20 s of it); ``--budget-s`` stops starting candidates after that many seconds, so
split long runs with ``--only``. Results of a Zen 4 VM: ``results-linear-kernels-amd-epyc-zen4.json``.

``int8.hand_avx512`` is a kernel written for this question (``int8_gemv.cpp``, built with g++ at its first
use; not part of af2): each weight row read once, 64 codes at a time, widened to fp32 and multiplied into
every row of x. On a 2-vCPU Zen 5 VM (2026-12-06, ``results-linear-kernels-amd-epyc-zen5.json``) it took
24.2 ms a step at M = 1 against 30.2 ms for ``torch._weight_int8pack_mm`` and 28.6 ms for bf16
(PyTorch's one-row kernel), in the same run; at M = 8 it was slower (77.9 against 49.1 ms). So even
a kernel written for the CPU streams int8 at 2.6x its read floor there, not at the floor.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from floors import best_of, cpu_features, read_bandwidth

LAYERS = 24
LAYER = [("q", 896, 896), ("k", 896, 128), ("v", 896, 128), ("o", 896, 896), ("gate", 896, 4864),
         ("up", 896, 4864), ("down", 4864, 896), ("xq", 896, 512), ("xo", 512, 896), ("xff1", 896, 3584),
         ("xff2", 3584, 896)]  # (name, K in, N out)
HEAD = ("head", 896, 151936)
FUSED = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}  # one matmul each when fused
GROUP = 128  # int4 group size (every K here is a multiple)


# ------------------------------------------------------------------------------------------------
# the weight set, in every form a candidate starts from


def make_forms(N: int, K: int) -> dict:
    """A random (N, K) weight as int8 codes with per-row scales, and exactly that weight in fp32
    (its bf16 form is rounded): cheaper to make than quantizing, and the int8 kernels' reference."""
    codes = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    scale = torch.empty(N).uniform_(0.5, 1.0).div_(127 * 20).bfloat16()
    w = codes.float().mul_(scale.float()[:, None])
    return {"f32": w, "bf16": w.bfloat16(), "i8": codes, "s_bf16": scale, "s_f32": scale.float()}


def weight_set(layers: int = LAYERS, vocab: int = HEAD[2]) -> list[tuple[str, dict]]:
    """[(shape name, forms)] in the call order of one decoding step."""
    torch.manual_seed(0)
    seq = [(name, make_forms(N, K)) for _ in range(layers) for name, K, N in LAYER]
    return seq + [(HEAD[0], make_forms(HEAD[2] if vocab is None else vocab, HEAD[1]))]


def fuse(seq: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The same weights with each layer's q/k/v and gate/up concatenated (one matmul each)."""
    out, layer = [], {}
    for name, forms in seq:
        layer[name] = forms
        if name in ("xff2", HEAD[0]):
            for new, parts in FUSED.items():
                if parts[0] in layer:
                    forms = [layer.pop(p) for p in parts]
                    layer[new] = {k: torch.cat([f[k] for f in forms]) for k in forms[0]}
            order = ("qkv", "o", "gate_up", "down", "xq", "xo", "xff1", "xff2", HEAD[0])
            out += [(n, layer[n]) for n in order if n in layer]
            layer = {}
    return out


# ------------------------------------------------------------------------------------------------
# candidates: prep(forms, M) -> state (what the kernel reads), call(x, state) -> y


@dataclass(frozen=True)
class Candidate:
    name: str
    act: torch.dtype
    prep: Callable[[dict, int], object]
    call: Callable[[torch.Tensor, object], torch.Tensor]
    nbytes: Callable[[object], int]
    mkldnn: bool = True  # torch.backends.mkldnn.enabled while it runs
    per_rows: bool = False  # the prepared weight depends on M (packed for a batch size)
    check: bool = True  # compare with the fp32 reference (int4 runs on random codes)


def _bytes(*ts: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def _fbgemm_prep(f: dict, M: int):
    codes, scale = f["i8"], f["s_f32"].double()
    q = torch._make_per_channel_quantized_tensor(codes, scale, torch.zeros(len(codes), dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(q, None), codes.numel() + 8 * len(codes)


def _int4_prep(f: dict, M: int):
    """Random 4-bit codes with per-group scales and zeros: bandwidth only, not accuracy."""
    N, K = f["i8"].shape
    codes = f["i8"].to(torch.int32) & 15
    sz = torch.full((K // GROUP, N, 2), 0.01, dtype=torch.bfloat16)
    return torch._convert_weight_to_int4pack_for_cpu(codes, 1), sz


def _int8_gemv(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """y = x @ (codes * scale).T as one multiply-and-reduce: under torch.compile (inductor's C++ backend)
    it becomes a single loop that reads each int8 code once and never materialises the dequantized weight."""
    return ((x.float()[:, None, :] * codes.float()[None]).sum(-1) * scale.float()).to(x.dtype)


@functools.cache
def _hand_int8():
    """``int8_gemv.cpp`` built with g++ against this torch (a minute at most, once per process) and loaded;
    returns its op namespace: kernels written for AVX-512F CPUs (the W8A16 one for VNNI too), to ask how fast
    int8 weights can stream here. Not part of af2."""
    import hashlib
    import subprocess
    import tempfile
    from pathlib import Path

    from torch.utils import cpp_extension

    src = Path(__file__).with_name("int8_gemv.cpp")
    tag = hashlib.sha256(src.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    lib = Path(tempfile.gettempdir()) / f"af2-bench-int8-{tag}.so"
    if not lib.exists():
        flags = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-L{p}" for p in cpp_extension.library_paths()]
        abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
        subprocess.run(["g++", "-O3", "-mavx512f", "-fopenmp", "-shared", "-fPIC", "-std=c++17", abi, *flags,
                        str(src), "-o", str(lib), "-lc10", "-ltorch_cpu"], check=True, capture_output=True)
    torch.ops.load_library(str(lib))
    return torch.ops.af2_bench


def _hand_state(feature: str) -> Callable[[dict, int], object]:
    """The hand kernels' state (codes, scales), refused on a CPU without ``feature`` (a ``cpu_features`` key):
    there they would die of an illegal instruction, where a refusal is recorded and the loop goes on."""
    def prep(f: dict, M: int):
        if not cpu_features()[feature]:
            raise RuntimeError(f"this CPU lacks {feature}")
        return f["i8"], f["s_bf16"]
    return prep


@functools.cache
def _int8_gemv_compiled() -> Callable:
    """``_int8_gemv`` compiled once per weight shape (a dynamic-shape graph ran at eager speed), at its
    first call, in the untimed correctness check. Needs a C++ compiler at run time, as any CPU
    torch.compile does."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return torch.compile(_int8_gemv, dynamic=False)


def candidates() -> list[Candidate]:
    mk = torch.ops.mkldnn
    mv_call = lambda x, w: torch.mv(w, x[0])[None] if x.shape[0] == 1 else torch.mm(w, x.t()).t()
    return [
        Candidate("f32.linear", torch.float32, lambda f, M: f["f32"], F.linear, _bytes),
        Candidate("f32.linear.nomkldnn", torch.float32, lambda f, M: f["f32"], F.linear, _bytes, mkldnn=False),
        Candidate("f32.mv", torch.float32, lambda f, M: f["f32"], mv_call, _bytes),
        Candidate("f32.kmajor", torch.float32, lambda f, M: f["f32"].t().contiguous(), torch.mm, _bytes),
        Candidate("f32.mkldnn_packed", torch.float32, lambda f, M: mk._reorder_linear_weight(f["f32"], M),
                  lambda x, w: mk._linear_pointwise(x, w, None, "none", [], ""), _bytes, per_rows=True),
        Candidate("f32.mkl_packed", torch.float32,
                  lambda f, M: (torch.ops.mkl._mkl_reorder_linear_weight(f["f32"], M), f["f32"], M),
                  lambda x, s: torch.ops.mkl._mkl_linear(x, s[0], s[1], None, s[2]), lambda s: _bytes(s[1]),
                  per_rows=True),
        Candidate("bf16.linear", torch.bfloat16, lambda f, M: f["bf16"], F.linear, _bytes),
        Candidate("bf16.linear.nomkldnn", torch.bfloat16, lambda f, M: f["bf16"], F.linear, _bytes, mkldnn=False),
        Candidate("bf16.mv", torch.bfloat16, lambda f, M: f["bf16"], mv_call, _bytes),
        Candidate("bf16.mv.nomkldnn", torch.bfloat16, lambda f, M: f["bf16"], mv_call, _bytes, mkldnn=False),
        Candidate("bf16.kmajor", torch.bfloat16, lambda f, M: f["bf16"].t().contiguous(), torch.mm, _bytes),
        Candidate("bf16.kmajor.nomkldnn", torch.bfloat16, lambda f, M: f["bf16"].t().contiguous(), torch.mm,
                  _bytes, mkldnn=False),
        Candidate("bf16.packed(current)", torch.bfloat16, lambda f, M: mk._reorder_linear_weight(f["bf16"], 8),
                  lambda x, w: mk._linear_pointwise(x, w, None, "none", [], ""), _bytes),
        Candidate("bf16.packed_hintM", torch.bfloat16, lambda f, M: mk._reorder_linear_weight(f["bf16"], M),
                  lambda x, w: mk._linear_pointwise(x, w, None, "none", [], ""), _bytes, per_rows=True),
        Candidate("int8.pack_bf16(current)", torch.bfloat16, lambda f, M: (f["i8"], f["s_bf16"]),
                  lambda x, s: torch._weight_int8pack_mm(x, s[0], s[1]), lambda s: _bytes(*s)),
        Candidate("int8.pack_f32", torch.float32, lambda f, M: (f["i8"], f["s_f32"]),
                  lambda x, s: torch._weight_int8pack_mm(x, s[0], s[1]), lambda s: _bytes(*s)),
        Candidate("int8.fbgemm_dyn(act q)", torch.float32, _fbgemm_prep,
                  lambda x, s: torch.ops.quantized.linear_dynamic(x, s[0], True), lambda s: s[1]),
        Candidate("int8.inductor_gemv", torch.bfloat16, lambda f, M: (f["i8"], f["s_bf16"]),
                  lambda x, s: _int8_gemv_compiled()(x, *s),
                  lambda s: _bytes(*s)),
        Candidate("int8.hand_avx512(bench only)", torch.bfloat16, _hand_state("avx512"),
                  lambda x, s: _hand_int8().int8_linear(x, *s), lambda s: _bytes(*s)),
        Candidate("int8.hand_a16_vnni(bench only)", torch.bfloat16, _hand_state("avx512_vnni"),
                  lambda x, s: _hand_int8().int8_linear_a16(x, *s), lambda s: _bytes(*s)),
        Candidate("int4.pack_bf16(g128)", torch.bfloat16, _int4_prep,
                  lambda x, s: torch._weight_int4pack_mm_for_cpu(x, s[0], GROUP, s[1]), lambda s: _bytes(*s),
                  check=False),
    ]


# ------------------------------------------------------------------------------------------------


def shape_key(K: int, N: int) -> str:
    return f"{K}->{N}"


def prepare(c: Candidate, seq: list[tuple[str, dict]], M: int) -> list:
    return [(name, c.prep(f, M), f["f32"].shape) for name, f in seq]


def run_candidate(c: Candidate, seq: list[tuple[str, dict]], states: list, M: int, reps: int) -> dict:
    xs = {K: torch.randn(M, K).to(c.act) for K in {shape[1] for _, _, shape in states}}
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = c.mkldnn
    try:
        # correctness against the reference matmul on the first weight of each shape
        errs = {}
        first = (len(seq) - 1) // sum(name == seq[0][0] for name, _ in seq)  # one layer, then the head
        for (name, st, (N, K)), (_, forms) in list(zip(states, seq))[:first] + [(states[-1], seq[-1])] \
                if c.check else []:
            ref = F.linear(xs[K].float(), forms["f32"])
            y = c.call(xs[K], st).float()
            errs[name] = ((y - ref).abs().max() / ref.abs().max()).item()
        errs = errs or {"-": float("nan")}
        best, per = float("inf"), None
        for _ in range(reps + 1):
            t_shape: dict[str, float] = {}
            t0 = time.perf_counter()
            for name, st, (N, K) in states:
                t = time.perf_counter()
                c.call(xs[K], st)
                key = shape_key(K, N)
                t_shape[key] = t_shape.get(key, 0.0) + time.perf_counter() - t
            total = time.perf_counter() - t0
            if total < best:
                best, per = total, t_shape
        tiny = c.prep(make_forms(128, 128), M)
        x_tiny = torch.randn(M, 128).to(c.act)
        overhead = best_of(lambda: [c.call(x_tiny, tiny) for _ in range(200)], 3) / 200
    finally:
        torch.backends.mkldnn.enabled = before
    nbytes: dict[str, int] = {}
    for name, st, (N, K) in states:
        key = shape_key(K, N)
        nbytes[key] = nbytes.get(key, 0) + c.nbytes(st)
    return {"total_s": best, "per_shape_s": per, "bytes": nbytes, "call_overhead_s": overhead, "rel_err": errs}


def fmt_table(results: list[dict], bw: float) -> str:
    keys = list(results[0]["per_shape_s"])
    head = f"{'candidate':28s} M " + " ".join(f"{k:>19s}" for k in keys) + \
        f" {'step ms':>8s} {'GB/s':>6s} {'x floor':>7s} {'call us':>7s} {'max rel err':>11s}"
    lines = [head, " " * 31 + " ".join(f"{'ms  GB/s  xfloor':>19s}" for _ in keys)]
    for r in results:
        cells = []
        for k in keys:
            s, b = r["per_shape_s"][k], r["bytes"][k]
            cells.append(f"{s * 1e3:6.2f} {b / s / 1e9:5.1f} {s / (b / bw):5.2f}")
        tb = sum(r["bytes"].values())
        lines.append(f"{r['name']:28s} {r['M']} " + " ".join(f"{c:>19s}" for c in cells) +
                     f" {r['total_s'] * 1e3:8.1f} {tb / r['total_s'] / 1e9:6.1f} {r['total_s'] / (tb / bw):7.2f}"
                     f" {r['call_overhead_s'] * 1e6:7.1f} {max(r['rel_err'].values()):11.1e}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="1,8")
    ap.add_argument("--only", help="comma-separated candidate names (prefix match)")
    ap.add_argument("--skip-unfused", action="store_true", help="only the --fused-only runs")
    ap.add_argument("--fused-only", help="candidates (prefix match) to run fused")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=100.0, help="stop starting candidates after this")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--layers", type=int, default=LAYERS, help="fewer for a smoke test")
    ap.add_argument("--vocab", type=int, default=HEAD[2], help="smaller for a smoke test")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    bw = read_bandwidth()
    print(f"torch {torch.__version__}, {args.threads} threads, read stream {bw / 1e9:.1f} GB/s", flush=True)
    cands = candidates()
    if args.only:
        cands = [c for c in cands if any(c.name.startswith(p) for p in args.only.split(","))]
    rows = [int(r) for r in args.rows.split(",")]
    results = []
    plans = [] if args.skip_unfused else [(False, cands)]
    if args.fused_only:
        plans.append((True, [c for c in candidates() if any(c.name.startswith(p) for p in args.fused_only.split(","))]))
    seq = weight_set(args.layers, args.vocab)
    print(f"weights built at {time.perf_counter() - t_start:.0f} s", flush=True)
    for fused, group in plans:
        if fused:
            seq = fuse(seq)
        for c in group:
            states = None
            for M in rows:
                if time.perf_counter() - t_start > args.budget_s:
                    print(f"budget spent: skipping {c.name} M={M}", flush=True)
                    continue
                try:
                    if states is None or c.per_rows:
                        states = None
                        states = prepare(c, seq, M)
                    r = run_candidate(c, seq, states, M, args.reps)
                except Exception as e:  # a kernel this build lacks is a result, not a crash
                    print(f"{c.name} M={M}: {type(e).__name__}: {str(e)[:160]}", flush=True)
                    continue
                r.update(name=c.name + (".fused" if fused else ""), M=M)
                results.append(r)
                print(f"  {r['name']:30s} M={M} {r['total_s'] * 1e3:7.1f} ms  "
                      f"({time.perf_counter() - t_start:.0f} s)", flush=True)
            del states
    for fused in (False, True):
        for M in rows:
            part = [r for r in results if r["M"] == M and r["name"].endswith(".fused") == fused]
            if part:
                print(f"\nM={M}, {'fused q/k/v and gate/up' if fused else 'unfused'}, read floor from "
                      f"{bw / 1e9:.1f} GB/s\n{fmt_table(part, bw)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "read_bytes_per_s": bw, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
