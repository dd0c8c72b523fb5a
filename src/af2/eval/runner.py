"""The evaluation runner: load tasks, batch requests through an adapter, shard, resume, score.

Sharding (torchrun or any launcher that sets RANK and WORLD_SIZE): rank r answers examples
r, r+W, r+2W, ... of each task (examples sorted by id) into its own
``<out>/<task>/predictions.rank<r>-of-<W>.jsonl``, then writes a ``done`` marker. Rank 0 waits
for every marker, merges the shards, scores and writes the reports. No process group is needed,
so shards can also run one after another or on different machines sharing ``--out``.

Resume: each answered batch is appended and flushed before the next one starts; a rerun with
the same ``--out`` skips every example already in its shard file (a line cut off by a kill is
dropped and answered again). A shard file written by another model, prompt or sharding is an
error, not silently mixed.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from af2.errors import RequestError
from af2.jsonl import append_jsonl, read_jsonl, record_id
from af2.eval.adapters import Adapter, Request
from af2.eval.benchmarks import get_task
from af2.eval.registry import Benchmark, Example, Task
from af2.eval.scoring import ScoringOptions, get_scorer, intervals, score_by_category


@dataclasses.dataclass(frozen=True)
class RunConfig:
    tasks: tuple[str, ...]
    data_root: Path | None  # None: every task needs its own entry in data_overrides
    out_dir: Path
    data_overrides: dict[str, Path] = dataclasses.field(default_factory=dict)
    batch_size: int = 8
    limit: int | None = None  # first N examples (by id) of each task: for smoke runs
    rank: int = 0
    world_size: int = 1
    merge_timeout_s: float = 24 * 3600.0
    scoring: ScoringOptions = ScoringOptions()
    progress: bool = True
    paper_comparison: bool = True  # False for look-alike tasks (e.g. built from the corpus) that are not the benchmark


def rank_from_env() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun sets them; (0, 1) when unset."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise RequestError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def _shard_path(task_dir: Path, rank: int, world: int) -> Path:
    return task_dir / f"predictions.rank{rank}-of-{world}.jsonl"


def _done_path(task_dir: Path, rank: int, world: int) -> Path:
    return task_dir / f"done.rank{rank}-of-{world}"


def _read_shard(path: Path, model_sha: str) -> dict[str, dict]:
    """Answers already in a shard file; drops (and rewrites without) a truncated last line."""
    found = read_jsonl(path, strict=False, error=RequestError)
    if found.bad_lines:
        raise RequestError(f"{path}: line {found.bad_lines[0][0]} is not JSON; delete the file to answer its examples "
                           "again")
    if found.torn:
        with path.open("r+b") as f:
            f.truncate(found.good_bytes)
    rows: dict[str, dict] = {}
    for _, row in found.records:
        if not isinstance(row, dict) or record_id(row) is None:
            raise RequestError(f"{path}: a line is not a prediction record; delete the file to answer again")
        if row.get("model_sha256") != model_sha:
            raise RequestError(f"{path}: written by another model ({row.get('model_sha256')}); use a new --out")
        rows[row["id"]] = row
    return rows


def answer_shard(adapter: Adapter, task: Task, examples: Sequence[Example], config: RunConfig, model_sha: str) -> Path:
    """Answer this rank's share of ``examples``, appending to its shard file; returns the file."""
    task_dir = config.out_dir / task.name
    task_dir.mkdir(parents=True, exist_ok=True)
    _done_path(task_dir, config.rank, config.world_size).unlink(missing_ok=True)
    shard = list(examples[config.rank :: config.world_size])
    path = _shard_path(task_dir, config.rank, config.world_size)
    done = _read_shard(path, model_sha)
    todo = []
    for e in shard:
        prompt = task.prompt(e)
        if e.id in done:
            if done[e.id]["prompt"] != prompt:
                raise RequestError(f"{path}: example {e.id} was answered with another prompt; use a new --out")
        else:
            todo.append((e, prompt))
    bar = tqdm(total=len(shard), initial=len(shard) - len(todo), desc=f"{task.name} [rank {config.rank}]",
               disable=not config.progress, position=config.rank, leave=config.rank == 0)
    # Batches in a seeded random order of the items, not the file's: benchmark files list an item's clip
    # and its neighbours together (the same voice, source or template), and the shuffled-audio control
    # swaps clips within a batch, so it must draw each item's stand-in from across the task.
    random.Random(f"{task.name}/{config.rank}").shuffle(todo)
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        answers = adapter.answer([Request(task.name, e.id, e.audio, p) for e, p in batch])
        if len(answers) != len(batch):
            raise ValueError(f"adapter returned {len(answers)} answers for {len(batch)} requests")
        append_jsonl(path, [{"id": e.id, "prompt": p, "prediction": a, "model_sha256": model_sha}
                            for (e, p), a in zip(batch, answers)])
        bar.update(len(batch))
    bar.close()
    _done_path(task_dir, config.rank, config.world_size).write_text("done\n", encoding="utf-8")
    return path


def merge_shards(task: Task, examples: Sequence[Example], config: RunConfig, model_sha: str) -> list[str]:
    """Rank 0: wait for every rank's marker, then the predictions of all ``examples`` in order."""
    task_dir = config.out_dir / task.name
    deadline = time.monotonic() + config.merge_timeout_s
    markers = [_done_path(task_dir, r, config.world_size) for r in range(config.world_size)]
    while not all(m.exists() for m in markers):
        if time.monotonic() > deadline:
            missing = [m.name for m in markers if not m.exists()]
            raise RequestError(f"task {task.name}: ranks did not finish within {config.merge_timeout_s:.0f} s: {missing}")
        time.sleep(1.0)
    merged: dict[str, str] = {}
    for r in range(config.world_size):
        shard = _read_shard(_shard_path(task_dir, r, config.world_size), model_sha)
        merged.update({k: v["prediction"] for k, v in shard.items()})
    missing = [e.id for e in examples if e.id not in merged]
    if missing:
        raise RequestError(f"task {task.name}: no answer for {len(missing)} example(s), e.g. {missing[:3]}; rerun to resume")
    return [merged[e.id] for e in examples]


def score_task(task: Task, examples: Sequence[Example], predictions: Sequence[str],
               options: ScoringOptions) -> dict[str, Any]:
    """Metrics with 95 % intervals overall, per category and per facet, plus the per-example rows."""
    scorer = get_scorer(task.scorer_name)
    overall = scorer.score(examples, predictions, options)
    by_facet: dict[str, Any] = {}
    facet_names = sorted({f for e in examples for f in e.extra.get("facets", {})})
    for facet in facet_names:
        relabelled = [dataclasses.replace(e, category=e.extra.get("facets", {}).get(facet, "(none)")) for e in examples]
        by_facet[facet] = score_by_category(scorer, relabelled, predictions, options, overall)
    bands = duration_bands([e.audio for e in examples])
    if bands is not None and "duration" not in by_facet:
        relabelled = [dataclasses.replace(e, category=b) for e, b in zip(examples, bands)]
        table = score_by_category(scorer, relabelled, predictions, options, overall)
        by_facet["duration"] = {label: table[label] for _, label in DURATION_BANDS if label in table}
    rows = [{"id": e.id, "category": e.category, "audio": e.audio, "prompt": task.prompt(e), "prediction": p,
             "reference": e.reference, "choices": list(e.choices), **s}
            for e, p, s in zip(examples, predictions, overall.per_example)]
    return {
        "n": len(examples), "scorer": scorer.name, "scorer_version": scorer.version, "primary": scorer.primary,
        "rule": scorer.rule, "category_name": task.category_name,
        "metrics": {**overall.metrics, "ci95": intervals(overall.per_example, options)},
        "by_category": score_by_category(scorer, examples, predictions, options, overall),
        "by_facet": by_facet, "details": overall.details, "rows": rows,
    }


# Upper bounds (seconds, inclusive) and labels of the duration bands every report is broken down by:
# AF2's own window (10 s), stage 1's 30 s, stage 2's 2 min, stage 3's 5 min, and beyond.
DURATION_BANDS = ((10.0, "0-10 s"), (30.0, "10-30 s"), (120.0, "30 s-2 min"), (300.0, "2-5 min"),
                  (float("inf"), "over 5 min"))


def duration_band(seconds: float) -> str:
    return next(label for upper, label in DURATION_BANDS if seconds <= upper)


def duration_bands(audios: Sequence[str]) -> list[str] | None:
    """Each audio file's duration band (from its header), or None when any file cannot be probed
    (a predictions-only run without the audio): a partial breakdown would mislead."""
    from af2.audio.decode import probe
    from af2.errors import AudioError

    out = []
    for path in audios:
        try:
            seconds = probe(path).duration_s if path and os.path.isfile(path) else None
        except AudioError:
            seconds = None
        if seconds is None:
            return None
        out.append(duration_band(seconds))
    return out


def data_folder(task: Task, config: RunConfig) -> Path:
    if task.name in config.data_overrides:
        return config.data_overrides[task.name]
    if config.data_root is None:
        raise RequestError(f"task {task.name}: no data folder; pass --data {task.name}=PATH or --data-root DIR")
    return config.data_root / task.folder


def run(adapter: Adapter, config: RunConfig) -> dict[str, Any] | None:
    """Evaluate every task; on rank 0 write and return the summary (None on other ranks)."""
    from af2.eval import report

    description = adapter.describe()
    model_sha = str(description.get("model_sha256", "unknown"))
    loaded: dict[str, tuple[Task, Benchmark]] = {}
    for name in config.tasks:
        task = get_task(name)
        benchmark = task.read(data_folder(task, config))
        if config.limit is not None:
            benchmark = dataclasses.replace(benchmark, examples=benchmark.examples[: config.limit])
        loaded[name] = (task, benchmark)
    for task, benchmark in loaded.values():
        answer_shard(adapter, task, benchmark.examples, config, model_sha)
    if config.rank != 0:
        return None
    results = {}
    for name, (task, benchmark) in loaded.items():
        predictions = merge_shards(task, benchmark.examples, config, model_sha)
        results[name] = score_task(task, benchmark.examples, predictions, config.scoring)
    return report.write_all(config, description, loaded, results)
