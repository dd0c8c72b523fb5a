"""Serving benchmark: continuous batching under 1, 4, 16 and 64 concurrent clients, against the same
requests answered one by one through the Python API, in the same run.

The server is ``af2 serve`` in its own process on 127.0.0.1; the clients are asyncio streaming
HTTP clients on loopback in this one. Every level sends the same bounded list of requests (the
example clips shipped in ``af2.examples`` with everyday questions, greedy, up to 32 new tokens)
and reports requests/s, generated tokens/s, p50/p99 time to first token and latency, rejections
(429) and failures, and peak memory (of this process for the one-by-one run, of the server
process for the others). The ratio at 16 clients is its requests/s over the sequential
baseline's. Both sides use the library's default dtype (bf16 on CPUs with native bf16) unless
``--dtype`` says otherwise.

    python benchmarks/serve.py                          # the default model, 64 requests per level
    python benchmarks/serve.py --quick                  # the golden fixture's tiny model, seconds
    python benchmarks/serve.py --model PATH --device cuda --requests 256
    python benchmarks/serve.py --readme RESULTS.json    # rewrite README's serve table from saved results
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np
import soundfile as sf
import torch

import af2
import af2.examples
from af2.inference import DEFAULT_MODEL
from af2.serve.local import wait_healthy
from floors import cpu_name, cpu_slug
from readme_block import rewrite_block

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "af2-golden-a"
SERVED = "bench"  # the model id the server answers to
QUESTIONS = ["What is happening in this recording?", "Describe the sound in one sentence.",
             "Is there speech in this audio? What is said?", "Which instrument is playing?",
             "Is this recorded indoors or outdoors?"]
README_START, README_END = "<!-- serve benchmark table: start -->", "<!-- serve benchmark table: end -->"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def clips(seconds: list[float], rate: int = 16_000) -> list[bytes]:
    """Synthetic WAV clips (tone + noise bursts) of the given lengths, made in memory."""
    rng = np.random.default_rng(0)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * rate)) / rate
        x = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        buf = io.BytesIO()
        sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
        out.append(buf.getvalue())
    return out


def example_clips() -> list[bytes]:
    """The clips shipped with af2 (speech and music, 2.6-7.2 s), as the bytes a client uploads."""
    return [af2.examples.clip(name).read_bytes() for name in af2.examples.CLIPS]


def requests(n: int, audio: list[bytes], questions: list[str]) -> list[tuple[bytes, str]]:
    return [(audio[i % len(audio)], questions[(i // len(audio)) % len(questions)]) for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary(name: str, wall: float, ttft: list[float], latency: list[float], tokens: int, ok: int,
            rejected: int, failed: int) -> dict:
    return {"mode": name, "ok": ok, "rejected": rejected, "failed": failed, "wall_s": wall,
            "req_per_s": ok / wall, "tok_per_s": tokens / wall,
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "lat_p50": percentile(latency, 50), "lat_p99": percentile(latency, 99), "rss_gib": peak_rss_gib()}


def sequential(api, reqs, max_tokens: int) -> dict:
    ttft, latency, tokens = [], [], 0
    t0 = time.perf_counter()
    for data, question in reqs:
        start = time.perf_counter()
        answer = api.ask(data, question, max_new_tokens=max_tokens)
        latency.append(time.perf_counter() - start)
        ttft.append(answer.timings.first_token_s)
        tokens += answer.timings.new_tokens
    return summary("python API, one by one", time.perf_counter() - t0, ttft, latency, tokens, len(reqs), 0, 0)


def audio_format(data: bytes) -> str:
    return "flac" if data[:4] == b"fLaC" else "wav"


async def _one(client: httpx2.AsyncClient, url: str, data: bytes, question: str, max_tokens: int):
    """→ (status, ttft, latency, completion tokens) of one streamed request."""
    body = {"model": SERVED, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": question},
                {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(),
                                                            "format": audio_format(data)}}]}]}
    start = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, None, time.perf_counter() - start, 0
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return 500, None, time.perf_counter() - start, 0
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return 200, first, time.perf_counter() - start, tokens


async def concurrent(url: str, reqs, clients: int, max_tokens: int, timeout: float) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for r in reqs:
        queue.put_nowait(r)
    results = []

    async def worker(client: httpx2.AsyncClient) -> None:
        while not queue.empty():
            data, question = queue.get_nowait()
            try:
                results.append(await _one(client, url, data, question, max_tokens))
            except httpx2.HTTPError:
                results.append((0, None, float("nan"), 0))

    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    t0 = time.perf_counter()
    async with httpx2.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] == 200]
    mode = f"server, {clients} client{'s' if clients != 1 else ''}"
    return summary(mode, wall, [r[1] for r in ok if r[1] is not None], [r[2] for r in ok],
                   sum(r[3] for r in ok), len(ok), sum(r[0] == 429 for r in results),
                   sum(r[0] not in (200, 429) for r in results))


def table(rows: list[dict]) -> str:
    head = ("| mode | ok | 429 | failed | req/s | tok/s | TTFT p50 | TTFT p99 | latency p50 | latency p99 "
            "| peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {r['mode']} | {r['ok']} | {r['rejected']} | {r['failed']} | {r['req_per_s']:.2f} | "
             f"{r['tok_per_s']:.1f} | {r['ttft_p50']:.2f} s | {r['ttft_p99']:.2f} s | {r['lat_p50']:.2f} s | "
             f"{r['lat_p99']:.2f} s | {r['rss_gib']:.2f} GiB |" for r in rows]
    return "\n".join([head, *lines])


def verdict(results: dict) -> str:
    rows = results["rows"]
    at16 = next((r for r in rows if r["mode"] == "server, 16 clients"), None)
    if at16 is None:
        return "(no 16-client level in this run)"
    return (f"Throughput at 16 clients / sequential: **{at16['req_per_s'] / rows[0]['req_per_s']:.2f}x** "
            f"(p99 time to first token at 16 clients: {at16['ttft_p99']:.2f} s).")


def report(results: dict) -> str:
    """The README block: the table, the ratio, and what it was measured on."""
    m = results.get("machine", {})
    return "\n".join([table(results["rows"]), "", verdict(results), "",
                      "Where the server's time went (its own /metrics: af2_batch_size, af2_engine_seconds_total):",
                      "", where_time_went(results["rows"]), "",
                      f"Model {results['model']} ({results['dtype']}) on {results['device']}: {m.get('cpu', '?')}, "
                      f"{m.get('cores', '?')} cores; {results.get('threads', '?')} compute thread(s) for the one-by-one run "
                      f"and for each of the server's two worker threads (decoder, audio encoder); "
                      f"torch {m.get('torch', '?')}; {results['requests']} requests per "
                      f"level (the shipped example clips × {len(results.get('questions', []))} questions, greedy, "
                      f"at most {results['max_tokens']} new tokens), server --max-batch {results.get('max_batch', '?')}."])


def rewrite_readme(results: dict) -> None:
    rewrite_block(README_START, README_END, report(results))


def serve(model: str, args: argparse.Namespace, log: Path):
    """Start ``af2 serve`` in its own process (as deployed; the clients here do not share its GIL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "af2", "serve", "--model", model, "--served-model-name", SERVED, "--port", str(port),
           "--device", args.device, "--dtype", args.dtype, "--max-batch", str(args.max_batch), "--max-queue",
           str(args.max_queue), "--max-tokens", str(args.max_tokens), "--default-max-tokens", str(args.max_tokens),
           "--max-body-mb", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}  # the same compute threads as the one-by-one run
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, time.monotonic() + 900)
    except RuntimeError:
        proc.kill()
        raise SystemExit(f"the server did not become ready; its log:\n{log.read_text()[-3000:]}") from None
    return url, proc


def engine_counters(url: str) -> dict[str, float]:
    """The server's own counters: decoding steps, rows over those steps, engine busy seconds by phase."""
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in ("af2_batch_size_count", "af2_batch_size_sum") or name.startswith("af2_engine_seconds_total"):
            out[name.replace('af2_engine_seconds_total{phase="', "engine_").rstrip('"}')] = float(value)
    return out


def where_time_went(rows: list[dict]) -> str:
    head = ("| mode | decoding steps | mean rows per step | encoder thread busy | engine thread busy: prefill "
            "| steps | text | engine thread idle |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = []
    for r in rows:
        e = r.get("engine")
        if not e:
            continue
        steps = e.get("af2_batch_size_count", 0)
        mean = e.get("af2_batch_size_sum", 0) / steps if steps else 0
        busy = [e.get(f"engine_{k}", 0.0) for k in ("encode", "prefill", "step", "text")]
        idle = max(r["wall_s"] - sum(busy[1:]), 0.0)
        cells = " | ".join(f"{v:.1f} s ({v / r['wall_s']:.0%})" for v in [*busy, idle])
        lines.append(f"| {r['mode']} | {steps:.0f} | {mean:.1f} | {cells} |")
    return "\n".join([head, *lines])


def server_peak_rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="auto (the library's default), float32, bfloat16, int8")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="compute threads of the model, in the one-by-one run and in the server (default: torch's)")
    ap.add_argument("--requests", type=int, default=64, help="requests per level (the same list each time)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--clip-seconds", help="synthetic clips of these lengths (e.g. 5,10,20,30) instead of the "
                                           "shipped examples")
    ap.add_argument("--timeout", type=float, default=600, help="per-request client timeout, seconds")
    ap.add_argument("--quick", action="store_true",
                    help="the golden fixture's tiny model, 16 requests, 1/4/16 clients")
    ap.add_argument("--json", type=Path, help="raw results (default benchmarks/serve-results-<cpu>[-quick].json)")
    ap.add_argument("--readme", type=Path, metavar="RESULTS", help="only rewrite README's serve table from RESULTS")
    args = ap.parse_args()
    if args.readme:
        rewrite_readme(json.loads(args.readme.read_text()))
        return 0
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model, questions = args.model, QUESTIONS
        audio = clips([float(s) for s in args.clip_seconds.split(",")]) if args.clip_seconds else example_clips()
        if args.quick:
            from af2.checkpoint.folder import save_pretrained
            from af2.checkpoint.official import load_official
            from af2.parity import fixture_config

            lm, tokenizer, _ = load_official(FIXTURE / "checkpoint", cfg=fixture_config(FIXTURE))
            model = str(save_pretrained(lm, Path(tmp) / "tiny-fixture", tokenizer))
            args.clients, args.requests, args.max_tokens = "1,4,16", 16, 16
            questions = ["w379 w366 w250", "w20 w196 w68", "w189 w486 w363 w128"]
        api = af2.load(model, device=args.device, dtype=None if args.dtype == "auto" else args.dtype)
        reqs = requests(args.requests, audio, questions)
        api.ask(reqs[0][0], reqs[0][1], max_new_tokens=2)  # warm-up
        rows = [sequential(api, reqs, args.max_tokens)]
        dtype = api.dtype_name
        print(table(rows), flush=True)
        del api
        url, proc = serve(model, args, Path(tmp) / "server.log")
        try:
            for clients in (int(c) for c in args.clients.split(",")):
                before = engine_counters(url)
                rows.append(asyncio.run(concurrent(url, reqs, clients, args.max_tokens, args.timeout)))
                rows[-1]["rss_gib"] = server_peak_rss_gib(proc.pid)
                after = engine_counters(url)
                rows[-1]["engine"] = {k: after[k] - before.get(k, 0.0) for k in after}
                print(rows[-1]["mode"], f"{rows[-1]['req_per_s']:.2f} req/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    results = {"model": "tiny fixture (--quick)" if args.quick else str(args.model), "device": args.device,
               "dtype": dtype, "requests": args.requests, "max_tokens": args.max_tokens, "max_batch": args.max_batch,
               "threads": args.threads, "questions": questions, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__},
               "rows": rows}
    print()
    print(report(results))
    out = args.json or REPO / "benchmarks" / f"serve-results-{cpu_slug()}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"\nraw results: {out}; README table: python benchmarks/serve.py --readme {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
