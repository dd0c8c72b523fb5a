"""``af2 ask`` and ``af2 caption``: one question, or a resumable JSONL batch."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from af2.ask_file import answer_record, answer_requests, open_output, precheck_audio, read_requests
from af2.errors import RequestError
from af2.jsonl import answered_ids
from af2.registry import DEFAULT_MODEL, DEFAULT_MODEL_ENV


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a question about an audio file (or a JSONL batch of them)",
                       description="Answer a question about AUDIO, or every line of --input (JSONL with "
                                   "'audio' and 'question', optional 'id') into --output; a rerun skips lines "
                                   "already answered.")
    p.add_argument("audio", nargs="?", help="audio file (wav, flac, ogg, opus, mp3, m4a, ...)")
    p.add_argument("question", nargs="?")
    p.add_argument("--input", type=Path, help="JSONL of requests: {\"id\", \"audio\", \"question\"}")
    p.add_argument("--output", type=Path, help="JSONL of answers (appended; resumable)")
    p.add_argument("--batch-size", type=int, default=4, help="requests answered together (default 4)")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    _common(p)
    p.set_defaults(func=_ask)

    p = sub.add_parser("caption", help="describe an audio file")
    p.add_argument("audio")
    _common(p)
    p.set_defaults(func=_caption)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=os.environ.get(DEFAULT_MODEL_ENV, DEFAULT_MODEL),
                   help="af2 model folder, official AF2 checkpoint folder, or hub id "
                        f"(default: ${DEFAULT_MODEL_ENV} or {DEFAULT_MODEL}, shipped with af2)")
    p.add_argument("--base-lm", help="Qwen2.5 base (folder or hub id) for official checkpoints (default: the size "
                                      "read from the checkpoint's embedding width)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16", "int8"],
                   help="default auto: bfloat16 on CPUs with AVX512-BF16/AMX, else float32; int8 = int8 linear weights")
    p.add_argument("--cpu-layout", choices=["rows", "packed"], default=None,
                   help="CPU weight layout for decoding (default: rows for one question in bfloat16, packed for "
                        "batches); which is faster for one row depends on the machine: benchmarks/decode_layouts.py")
    p.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    p.add_argument("--max-audio-seconds", type=float, default=300.0,
                   help="listen to at most this much of each file (default 300 = 5 min); longer input is "
                        "truncated with a warning")
    p.add_argument("--strict-length", action="store_true", help="make over-long input an error instead")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default, as the official benchmarks)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="seed for sampling")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")


def _gen_options(args: argparse.Namespace) -> dict:
    """Generation options from the flags, refusing values that are wrong or would be ignored."""
    if args.max_new_tokens < 1:
        raise RequestError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.temperature >= 0:  # also NaN
        raise RequestError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise RequestError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise RequestError(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    sample = args.temperature > 0
    if not sample:
        unused = [flag for flag, value, default in (("--top-p", args.top_p, 1.0), ("--top-k", args.top_k, 0),
                                                     ("--seed", args.seed, None)) if value != default]
        if unused:
            raise RequestError(f"{', '.join(unused)} only matter when sampling, and --temperature 0 decodes "
                               "greedily; pass --temperature > 0 (e.g. 0.7) to sample")
    return {"max_new_tokens": args.max_new_tokens, "do_sample": sample, "temperature": args.temperature if sample
            else 1.0, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed, "stop": tuple(args.stop)}


def _check_common(args: argparse.Namespace) -> dict:
    """Everything that can be checked without the model, so a bad flag fails in a second, not after a load."""
    from af2.inference import check_device

    if not args.max_audio_seconds > 0:
        raise RequestError(f"--max-audio-seconds must be positive, got {args.max_audio_seconds}")
    check_device(args.device)
    return _gen_options(args)


def _load(args: argparse.Namespace, decode_batch: int = 1):
    from af2.inference import load

    api = load(args.model, device=args.device, dtype=args.dtype, base_lm=args.base_lm,
               max_audio_seconds=args.max_audio_seconds, strict_length=args.strict_length,
               decode_batch=decode_batch, cpu_layout=args.cpu_layout)
    if not args.quiet and sys.stderr.isatty():
        print(f"loaded {args.model} ({api.dtype_name}) in {api.load_s:.1f} s", file=sys.stderr)
    return api


def _print(answer, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"question": answer.question, **answer_record(answer)}))
    else:
        print(answer.text)
    if answer.audio.truncated_s:
        print(f"note: {answer.audio.truncated_s:.1f} s of {answer.audio.source} truncated "
              f"(heard {answer.audio.kept_s:.1f} s)", file=sys.stderr)


class EncodeProgress:
    """A ``progress(done, total)`` callback drawing a tqdm bar of audio windows on stderr; silent
    with ``--quiet`` or when stderr is not a terminal."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or self.bar.total != total or done < self.bar.n:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=total, unit="window", desc="encoding audio", file=sys.stderr, leave=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _one(args: argparse.Namespace, question: str) -> int:
    from af2.audio.decode import check_audio_path

    if not question.strip():
        raise RequestError("the question is empty; ask something about the audio")
    if getattr(args, "stream", False) and args.json:
        raise RequestError("--stream prints text as it comes and --json one object at the end; pass one of them")
    options = _check_common(args)
    check_audio_path(args.audio)
    stream = getattr(args, "stream", False)
    progress = EncodeProgress(args.quiet)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = _load(args)
            if stream:
                for piece in model.stream(args.audio, question, progress=progress, **options):
                    print(piece, end="", flush=True)
                print()
            else:
                _print(model.ask(args.audio, question, progress=progress, **options), args.json)
        finally:
            progress.close()
    for w in caught:  # one line each, after the answer; _print already reported truncation
        if isinstance(w.message, UserWarning) and (stream or "truncated" not in str(w.message)):
            print(f"note: {' '.join(str(w.message).split())}", file=sys.stderr)
    return 0


def _caption(args: argparse.Namespace) -> int:
    from af2.inference import CAPTION_PROMPT

    return _one(args, CAPTION_PROMPT)


def _ask(args: argparse.Namespace) -> int:
    if args.input is not None:
        if args.output is None:
            raise RequestError("--input needs --output (answers are appended there; a rerun resumes)")
        return run_jsonl(args)
    if not args.audio or not args.question:
        raise RequestError('give AUDIO and "QUESTION", or --input FILE.jsonl --output FILE.jsonl')
    return _one(args, args.question)


def run_jsonl(args: argparse.Namespace) -> int:
    requests = read_requests(args.input)
    options = _check_common(args)
    dropped = open_output(args.output)
    if dropped:
        print(f"{args.output}: dropped {dropped} unreadable, id-less or superseded line(s)", file=sys.stderr)
    done = answered_ids(args.output)
    todo = [r for r in requests if r["id"] not in done]
    print(f"{len(requests)} requests, {len(requests) - len(todo)} already answered, {len(todo)} to do",
          file=sys.stderr)
    failures, todo = precheck_audio(todo, args.output)
    if todo:
        failures += _answer(args, todo, options)
    if failures:
        print(f"{failures} request(s) failed; see their 'error' field in {args.output}", file=sys.stderr)
    return 1 if failures else 0


def _answer(args: argparse.Namespace, todo: list[dict], options: dict) -> int:
    """Answer ``todo`` with a progress bar; returns how many failed."""
    from tqdm import tqdm

    model = _load(args, decode_batch=max(1, min(args.batch_size, len(todo))))
    with tqdm(total=len(todo), unit="q", desc="af2 ask", disable=args.quiet) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation goes into each record instead
        return answer_requests(model, todo, args.output, options, args.batch_size, on_batch=bar.update)
