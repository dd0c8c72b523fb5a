"""What the benchmarks share: the CPU's name and features, a best-of timer, and the floors a figure is
compared with (matmul rate, read-only memory bandwidth), measured on this machine in the same run."""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _cpuinfo() -> str:
    info = Path("/proc/cpuinfo")
    return info.read_text() if info.exists() else ""


def _cpuinfo_field(field: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                 if line.split(":", 1)[0].strip() == field), "")


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def cpu_generation() -> str:
    """A short name for the CPU's generation, where the model name alone does not say it (cloud VMs
    report "AMD EPYC" for every generation, and the floors differ 2x between them): "zen4", "zen5",
    else "f<family>m<model>" from /proc/cpuinfo, or "" when unknown."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    if not family:
        return ""
    if "AMD" in cpu_name() and family == "25" and "avx512f" in _cpuinfo_field("flags").split():
        return "zen4"  # family 25 (0x19) is Zen 3 or Zen 4; only Zen 4 has AVX-512
    if "AMD" in cpu_name() and family == "26":
        return "zen5"
    return f"f{family}m{model}"


def cpu_slug() -> str:
    """The CPU's name and generation as a file-name part, e.g. "amd-epyc-zen5"."""
    name = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")[:40]
    generation = cpu_generation()
    return f"{name}-{generation}" if generation and generation not in name else name


def cpu_features() -> dict:
    flags = set(_cpuinfo_field("flags").split())
    return {"name": cpu_name(), "generation": cpu_generation(), "cores": os.cpu_count(), "avx512": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "amx": bool({"amx_bf16", "amx_tile"} & flags), "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__}


def best_of(fn: Callable[[], object], reps: int) -> float:
    """The fastest of ``reps`` timed calls (seconds), after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_rate(dtype: torch.dtype, n: int) -> float:
    """FLOP/s of the fastest n×n linear product (x @ Wᵀ, the layout of every layer) this torch has:
    ``F.linear`` on a plain weight, or oneDNN's kernel on a weight packed for it (as af2 packs its
    weights on CPUs). On a 2-vCPU AMD EPYC (Zen 5) ``F.linear`` in fp32 went to MKL at 209 GFLOP/s
    where oneDNN's packed kernel ran 482 (bf16: 887 against 1,000), so a floor from ``F.linear``
    alone would sit below what af2 itself reaches."""
    a, b = (torch.randn(n, n).to(dtype) for _ in range(2))
    seconds = best_of(lambda: torch.nn.functional.linear(a, b), 5)
    onednn = torch.backends.mkldnn.is_available() and \
        (dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if onednn:
        packed = torch.ops.mkldnn._reorder_linear_weight(b, n)
        seconds = min(seconds, best_of(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""), 5))
    return 2 * n**3 / seconds


def read_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes/s of a read-only stream (a sum over ``nbytes``): what a decoding step does with weights."""
    x = torch.empty(nbytes // 4).uniform_()
    return nbytes / best_of(lambda: x.sum(), 5)
