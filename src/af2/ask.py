"""``af2 ask`` and ``af2 caption``: one question, or a resumable JSONL batch."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from af2.cli import UserError

DEFAULT_MODEL_ENV = "AF2_MODEL"


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
    p.add_argument("--model", default=os.environ.get(DEFAULT_MODEL_ENV, "nvidia/audio-flamingo-2-0.5B"),
                   help="af2 model folder, official AF2 checkpoint folder, or hub id "
                        f"(default: ${DEFAULT_MODEL_ENV} or nvidia/audio-flamingo-2-0.5B)")
    p.add_argument("--base-lm", help="Qwen2.5 base (folder or hub id) for official checkpoints")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16", "int8"],
                   help="default auto: bfloat16 on CPUs with AVX512-BF16/AMX, else float32; int8 = int8 LM weights")
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
    sample = args.temperature > 0
    return {"max_new_tokens": args.max_new_tokens, "do_sample": sample, "temperature": args.temperature if sample
            else 1.0, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed, "stop": tuple(args.stop)}


def _load(args: argparse.Namespace):
    from af2.inference import load

    api = load(args.model, device=args.device, dtype=args.dtype, base_lm=args.base_lm,
               max_audio_seconds=args.max_audio_seconds, strict_length=args.strict_length)
    if not args.quiet and sys.stderr.isatty():
        print(f"loaded {args.model} ({api.dtype_name}) in {api.load_s:.1f} s", file=sys.stderr)
    return api


def answer_record(answer) -> dict:
    return {"answer": answer.text, "finish_reason": answer.finish_reason, "duration_s": answer.audio.duration_s,
            "kept_s": answer.audio.kept_s, "truncated_s": answer.audio.truncated_s, "windows": answer.audio.windows,
            "first_token_s": round(answer.timings.first_token_s, 4), "new_tokens": answer.timings.new_tokens}


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
    from af2.audio import AudioError

    progress = EncodeProgress(args.quiet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is reported below, once, in one line
        try:
            model = _load(args)
            if getattr(args, "stream", False):
                opts = _gen_options(args)
                for piece in model.stream(args.audio, question, progress=progress, **opts):
                    print(piece, end="", flush=True)
                print()
                return 0
            answer = model.ask(args.audio, question, progress=progress, **_gen_options(args))
        except AudioError as exc:
            raise UserError(str(exc)) from None
        finally:
            progress.close()
    _print(answer, args.json)
    return 0


def _caption(args: argparse.Namespace) -> int:
    from af2.inference import CAPTION_PROMPT

    return _one(args, CAPTION_PROMPT)


def _ask(args: argparse.Namespace) -> int:
    if args.input is not None:
        if args.output is None:
            raise UserError("--input needs --output (answers are appended there; a rerun resumes)")
        return run_jsonl(args)
    if not args.audio or not args.question:
        raise UserError('give AUDIO and "QUESTION", or --input FILE.jsonl --output FILE.jsonl')
    return _one(args, args.question)


def read_requests(path: Path) -> list[dict]:
    requests, seen = [], set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(item, dict) or not item.get("audio") or not str(item.get("question", "")).strip():
                raise UserError(f"{path}:{n}: each line needs non-empty 'audio' and 'question'")
            item.setdefault("id", f"line-{n}")
            item["id"] = str(item["id"])
            if item["id"] in seen:
                raise UserError(f"{path}:{n}: duplicate id {item['id']!r}")
            seen.add(item["id"])
            audio = Path(item["audio"])
            item["audio"] = str(audio if audio.is_absolute() else path.parent / audio)
            requests.append(item)
    return requests


def answered_ids(path: Path) -> set[str]:
    """Ids already written to ``path``; a torn last line (killed mid-write) is dropped."""
    if not path.exists():
        return set()
    done, good_bytes = set(), 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
                if "error" not in record:  # failed lines are retried on the next run
                    done.add(str(record["id"]))
                good_bytes += len(raw)
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                break
    if good_bytes < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return done


def run_jsonl(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from af2.audio import AudioError

    requests = read_requests(args.input)
    done = answered_ids(args.output)
    todo = [r for r in requests if r["id"] not in done]
    print(f"{len(requests)} requests, {len(requests) - len(todo)} already answered, {len(todo)} to do",
          file=sys.stderr)
    if not todo:
        return 0
    model = _load(args)
    options = _gen_options(args)
    failures = 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "a") as out, tqdm(total=len(todo), unit="q", desc="af2 ask", disable=args.quiet) as bar, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation goes into each record instead
        for start in range(0, len(todo), max(1, args.batch_size)):
            chunk = todo[start:start + args.batch_size]
            try:
                answers = model.ask_batch([r["audio"] for r in chunk], [r["question"] for r in chunk], **options)
                records = [{**r, **answer_record(a)} for r, a in zip(chunk, answers)]
            except (AudioError, ValueError):
                records = []  # one bad file must not sink its batch: answer its members one by one
                for r in chunk:
                    try:
                        records.append({**r, **answer_record(model.ask(r["audio"], r["question"], **options))})
                    except (AudioError, ValueError) as exc:
                        failures += 1
                        records.append({**r, "error": str(exc)})
            for record in records:
                out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(chunk))
    if failures:
        print(f"{failures} request(s) failed; see their 'error' field in {args.output}", file=sys.stderr)
    return 1 if failures else 0
