"""``af2 eval compare RUN_A RUN_B``: per-task differences between two runs on the same items,
with a paired test: McNemar's exact test for right/wrong scores (accuracy), a paired bootstrap of
the mean difference otherwise (CIDEr-D, judge, similarity). Items are paired by id; an item
missing from either run, or without a score in either (an unreadable judge reply), is left out
and the count of paired items is printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from af2.errors import RequestError
from af2.eval import stats
from af2.eval.scoring import PER_EXAMPLE_METRICS

ALPHA = 0.05


def _load(run: Path) -> dict[str, Any]:
    path = run / "summary.json"
    if not path.is_file():
        raise RequestError(f"{run}: no summary.json; pass the --out folder of a finished `af2 eval` run")
    return json.loads(path.read_text(encoding="utf-8"))["tasks"]


def _rows(run: Path, task: str) -> dict[str, dict]:
    path = run / task / "examples.jsonl"
    if not path.is_file():
        raise RequestError(f"{path} is missing; rerun `af2 eval` for task {task} into {run}")
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["id"]: r for r in rows}


def compare_task(run_a: Path, run_b: Path, task: str, metric: str) -> dict[str, Any]:
    spec = next((m for m in PER_EXAMPLE_METRICS if m.metric == metric), None)
    if spec is None:
        return {"task": task, "metric": metric, "test": f"none: {metric} is a corpus metric with no per-item score"}
    a, b = _rows(run_a, task), _rows(run_b, task)
    ids = sorted(i for i in a.keys() & b.keys() if a[i].get(spec.key) is not None and b[i].get(spec.key) is not None)
    xa, xb = [float(a[i][spec.key]) for i in ids], [float(b[i][spec.key]) for i in ids]
    mean = lambda xs: spec.scale * sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    row = {"task": task, "metric": metric, "n": len(ids), "a": mean(xa), "b": mean(xb),
           "difference": mean(xb) - mean(xa)}
    if spec.proportion:
        test = stats.mcnemar([x > 0.5 for x in xa], [x > 0.5 for x in xb])
        row.update(test="McNemar exact", p_value=test["p_value"],
                   detail=f"right only in A: {int(test['only_a'])}, right only in B: {int(test['only_b'])}")
    else:
        test = stats.paired_bootstrap(xa, xb)
        row.update(test=f"paired bootstrap ({stats.BOOTSTRAP_RESAMPLES} resamples, seed {stats.BOOTSTRAP_SEED})",
                   p_value=test["p_value"],
                   detail=f"B - A 95 % CI [{spec.scale * test['ci_low']:.2f}, {spec.scale * test['ci_high']:.2f}]")
    row["significant"] = row["p_value"] < ALPHA
    return row


def compare_runs(run_a: Path, run_b: Path) -> list[dict[str, Any]]:
    """One row per task present in both runs, on each task's primary metric."""
    sa, sb = _load(run_a), _load(run_b)
    common = sorted(sa.keys() & sb.keys())
    if not common:
        raise RequestError(f"{run_a} and {run_b} have no task in common")
    return [compare_task(run_a, run_b, t, sa[t]["primary"]) for t in common]


def format_rows(rows: list[dict[str, Any]], run_a: Path, run_b: Path) -> str:
    lines = [f"A = {run_a}", f"B = {run_b}", "",
             "| task | metric | paired n | A | B | B - A | test | p | significant (p < 0.05) | detail |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "p_value" not in r:
            lines.append(f"| {r['task']} | {r['metric']} | | | | | {r['test']} | | | |")
            continue
        lines.append(f"| {r['task']} | {r['metric']} | {r['n']} | {r['a']:.2f} | {r['b']:.2f} | {r['difference']:+.2f} "
                     f"| {r['test']} | {r['p_value']:.4g} | {'yes' if r['significant'] else 'no'} | {r['detail']} |")
    return "\n".join(lines)
