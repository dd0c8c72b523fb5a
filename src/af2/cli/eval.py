"""``af2 eval``: parse, validate, build the adapter and scoring options, call ``runner.run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from af2.errors import RequestError
from af2.eval.adapters import AUDIO_CONTROLS


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score a model on audio benchmarks with their official protocols",
                              description="Evaluate a model on benchmarks; see the README section 'Evaluation'.")
    p.add_argument("runs", nargs="*", metavar="compare RUN_A RUN_B | from-corpus CORPUS OUT",
                   help="compare: two finished runs (their --out folders) with paired tests; from-corpus: write "
                        "benchmark folders (af2-manifest, MMAU- and MMAR-format tasks) from a corpus's val split")
    p.add_argument("--list-tasks", action="store_true", help="name every registered task and exit")
    p.add_argument("--model", help="AF2 model folder or hub id (for --adapter af2; default: af2.load()'s default "
                                   "model); the predictions JSONL for --adapter predictions")
    p.add_argument("--adapter", default="af2", choices=("af2", "predictions", "first-choice"),
                   help="af2: an AF2 checkpoint; predictions: score a JSONL of {task,id,prediction} given as --model; "
                        "first-choice: a TEST adapter that ignores the audio (for checking the harness)")
    p.add_argument("--tasks", help="comma-separated task names (see --list-tasks)")
    p.add_argument("--data-root", type=Path, help="folder holding one sub-folder per benchmark")
    p.add_argument("--data", action="append", default=[], metavar="TASK=PATH",
                   help="data folder of one task (repeatable; tasks given this way need no --data-root)")
    p.add_argument("--out", type=Path, help="output folder; rerunning with the same one resumes")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="first N examples of each task (smoke runs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "int8"),
                   help="int8: weight-only int8 linears, bf16 activations (as af2.load(dtype=\"int8\"))")
    p.add_argument("--audio-control", default="own", choices=AUDIO_CONTROLS,
                   help="own: each item's audio (the evaluation); shuffled: another clip's audio (a model that "
                        "listens loses accuracy); silence: silence as long as each clip (the text-only baseline that keeps "
                        "the answer format); zero-gates: cross-attention gates at 0 (the plain base LM)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--caption-tokenizer", default="auto", choices=("auto", "ptb", "simple"))
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (a Java process; slow to start)")
    p.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", help="model name sent to the judge endpoint")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge API key")
    p.add_argument("--judge-retries", type=int, default=3)
    p.add_argument("--judge-max-tokens", type=int, default=1024, help="room for the judge's reasoning before its score")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-paper-comparison", action="store_true",
                   help="leave out the published AF2 numbers (for tasks that only share a benchmark's format)")
    p.set_defaults(func=main)


def list_tasks() -> int:
    from af2.eval.benchmarks import all_tasks

    for name, task in all_tasks().items():
        print(f"{name:22s} {task.scorer_name:18s} {task.description}")
    return 0


def _build_adapter(args):
    from af2.eval import adapters

    if args.adapter == "first-choice":
        return adapters.FirstChoiceAdapter()
    if args.adapter == "predictions":
        if not args.model or not Path(args.model).is_file():
            raise RequestError(f"--adapter predictions needs --model PATH of a predictions JSONL (got {args.model})")
        return adapters.PredictionsAdapter(args.model)
    return adapters.AF2Adapter(args.model, device=args.device, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                               audio_control=args.audio_control, batch_size=args.batch_size)


def compare(runs: list[str]) -> int:
    from af2.eval.compare import compare_runs, format_rows

    if len(runs) != 3 or runs[0] not in ("compare", "from-corpus"):
        raise RequestError(f"unexpected arguments {runs}; the sub-commands are `af2 eval compare RUN_A RUN_B` "
                           "and `af2 eval from-corpus CORPUS OUT`")
    a, b = Path(runs[1]), Path(runs[2])
    if runs[0] == "from-corpus":
        from af2.eval.corpus_tasks import build_from_corpus

        counts = build_from_corpus(a, b)
        print(f"benchmark folders in {b}: " + ", ".join(f"{t} ({n} items)" for t, n in counts.items()))
        print(f"next: af2 eval --tasks {','.join(counts)} --data-root {b} --out RESULTS [--model DIR]")
        return 0
    print(format_rows(compare_runs(a, b), a, b))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.runs:
        return compare(args.runs)
    if args.list_tasks:
        return list_tasks()
    from af2.eval.judge import Judge, JudgeConfig
    from af2.eval.runner import RunConfig, rank_from_env, run
    from af2.eval.scoring import ScoringOptions
    from af2.eval.benchmarks import get_task

    for flag in ("tasks", "out"):
        if getattr(args, flag) is None:
            raise RequestError(f"--{flag} is required (or --list-tasks, or compare RUN_A RUN_B)")
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    for t in tasks:
        get_task(t)
    overrides = {}
    for item in args.data:
        name, sep, path = item.partition("=")
        if not sep or name not in tasks:
            raise RequestError(f"--data {item!r}: expected TASK=PATH with TASK one of {', '.join(tasks)}")
        overrides[name] = Path(path)
    missing = [t for t in tasks if t not in overrides]
    if missing and args.data_root is None:
        raise RequestError(f"no data folder for {', '.join(missing)}: "
                           "pass --data-root DIR or --data TASK=PATH for each")
    if bool(args.judge_url) != bool(args.judge_model):
        raise RequestError("--judge-url and --judge-model go together")
    judge = None
    if args.judge_url:
        judge = Judge(JudgeConfig(url=args.judge_url, model=args.judge_model, cache_dir=args.out / "judge-cache",
                                  api_key_env=args.judge_key_env, max_retries=args.judge_retries,
                                  max_tokens=args.judge_max_tokens))
    rank, world = rank_from_env()
    config = RunConfig(tasks=tasks, data_root=args.data_root, out_dir=args.out, data_overrides=overrides,
                       batch_size=args.batch_size, limit=args.limit, rank=rank, world_size=world,
                       scoring=ScoringOptions(args.caption_tokenizer, not args.no_meteor, judge),
                       progress=not args.no_progress, paper_comparison=not args.no_paper_comparison)
    summary = run(_build_adapter(args), config)
    if summary is not None:
        for name, r in summary["tasks"].items():
            value = r["metrics"].get(r["primary"])
            print(f"{name}: {r['primary']} = {value:.2f}" if isinstance(value, float) else f"{name}: {value}")
        print(f"report: {args.out / 'report.md'}")
    return 0
