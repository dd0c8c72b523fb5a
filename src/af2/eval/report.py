"""What a run leaves in ``--out``: per-example JSONL, summary JSON, markdown report, PNG bar
charts with 95 % error bars and the reproducibility card. Everything is written in a fixed order
with sorted keys, floats rounded to 6 decimals and no timestamps, so two runs of the same model on
the same data give byte-identical files. A run of some tasks into an ``--out`` that already holds
results of other tasks (same model) keeps those in the summary and the report."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import af2
from af2.errors import RequestError
from af2.eval import paper, stats
from af2.eval.captioning import resolve_tokenizer
from af2.eval.registry import Benchmark, Task
from af2.jsonl import atomic_write_text, read_json, write_jsonl

PERCENT_METRICS = ("accuracy", "accuracy_exact", "similarity", "judge")  # 0-100 scales; the rest are raw
INTERVAL_NOTE = (f"95 % intervals: Wilson score intervals for accuracies; percentile bootstrap over items "
                 f"({stats.BOOTSTRAP_RESAMPLES} resamples, seed {stats.BOOTSTRAP_SEED}) for means of per-item scores "
                 "(CIDEr-D and ROUGE-L with the corpus IDF held fixed, judge, similarity).")


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _with_ci(value: Any, ci: list[float] | None) -> str:
    return _fmt(value) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(value, float) and ci else "")


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(af2.__file__).parent,
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if result.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(af2.__file__).parent,
                           capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    return result.stdout.strip() + ("+uncommitted-changes" if dirty else "")


def library_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def card(config, description: dict, loaded: dict[str, tuple[Task, Benchmark]], results: dict[str, Any]) -> dict:
    from af2.eval.similarity import ENCODER_ID

    scoring = config.scoring
    uses_captions = any(r["scorer"] == "captioning" for r in results.values())
    return {
        "af2_version": af2.__version__,
        "git_commit": git_commit(),
        "model": description,
        "tasks": {name: {"version": t.version, "prompt_template": t.prompt_template, "scorer": results[name]["scorer"],
                         "scorer_version": results[name]["scorer_version"], "scorer_rule": results[name]["rule"],
                         "examples": results[name]["n"], "data_source": t.data_source,
                         "benchmark_revision": t.revision, "benchmark_files_sha256": b.files}
                  for name, (t, b) in loaded.items()},
        "scoring": {
            "caption_tokenizer": resolve_tokenizer(scoring.caption_tokenizer) if uses_captions else "n/a",
            "meteor": scoring.meteor,
            "judge": None if scoring.judge is None else {
                **scoring.judge.describe(), "scale": "1-10 (judge_1_10) and mean x 10 (judge)"},
            "similarity_encoder": f"{ENCODER_ID}, mean pooling",
            "label_matching": "nearest label by MiniLM text embedding (accuracy); whole-word rule (accuracy_exact)",
            "intervals": INTERVAL_NOTE,
        },
        "libraries": {p: library_version(p) for p in ("torch", "transformers", "pycocoevalcap", "matplotlib", "numpy")},
        "limit": config.limit,
    }


def _table(rows: dict[str, dict[str, Any]], heading: str) -> list[str]:
    if not rows:
        return []
    columns = sorted({k for r in rows.values() for k in r if k not in ("n", "ci95")})
    lines = [f"### {heading}", "", f"| {heading.removeprefix('By ')} | n | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for name, metrics in rows.items():
        cells = [_with_ci(metrics.get(c, ""), metrics.get("ci95", {}).get(c)) for c in columns]
        lines.append(f"| {name} | {int(metrics['n'])} | " + " | ".join(cells) + " |")
    return lines + [""]


def _paper_section(results: dict[str, Any]) -> list[str]:
    rows = [(name, row) for name, r in results.items() for row in r.get("paper", [])]
    if not rows:
        return []
    lines = ["## Published AF2 results beside ours", "",
             "| task | benchmark (as published) | model | metric | published | ours [95 % CI] | ours - published | "
             "source | benchmark revision |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows:
        ours = "not in this run" if row["ours"] is None else _with_ci(row["ours"], row["ours_ci95"])
        diff = "" if row["difference"] is None else f"{row['difference']:+.2f}"
        lines.append(f"| {name} | {row['benchmark']} | {row['model']} | {row['metric']} | {row['paper']:.2f} | {ours} "
                     f"| {diff} | {row['source']} | {row['revision']} |")
    lines += ["", "Protocol caveats (a difference is a comparison only where the protocols match):", ""]
    lines += [f"- **{name} / {row['benchmark']}**: {row['caveat']}." for name, row in rows if row["caveat"]]
    return lines + [""]


def _judge_section(details: dict[str, Any]) -> list[str]:
    judge = details.get("judge")
    if not judge:
        return []
    histogram = judge["raw_score_histogram"]
    return ["### Judge", "", f"Model `{judge['model']}` at {judge['url']}, prompt sha256 `{judge['prompt_sha256']}`, "
            f"temperature {judge['temperature']}, max tokens {judge['max_tokens']}. {judge['scored']} replies scored, "
            f"{judge['failures']} unparseable (counted, left out of the means). Note: {judge['note']}.", "",
            "| raw score | " + " | ".join(histogram) + " |", "|---|" + "---|" * len(histogram),
            "| replies | " + " | ".join(str(v) for v in histogram.values()) + " |", ""]


def _task_section(name: str, r: dict[str, Any]) -> list[str]:
    ci = r["metrics"].get("ci95", {})
    lines = [f"## {name}", "", f"Scorer `{r['scorer']}` v{r['scorer_version']}: {r['rule']}.", "", "### Metrics", "",
             "| metric | value | 95 % CI |", "|---|---|---|"]
    for k, v in r["metrics"].items():
        if k != "ci95":
            interval = f"[{ci[k][0]:.2f}, {ci[k][1]:.2f}]" if k in ci else ""
            lines.append(f"| {k} | {_fmt(v)} | {interval} |")
    lines += [""] + _judge_section(r.get("details", {}))
    category_name = r.get("category_name", "category")
    lines += _table(r["by_category"], f"By {category_name}")
    for facet, rows in r["by_facet"].items():
        lines += _table(rows, f"By {facet}" if facet != category_name else f"By {facet} (facet)")
    return lines + [f"![{name}](plots/{name}.png)", ""]


def markdown(results: dict[str, Any], card_doc: dict[str, Any]) -> str:
    lines = ["# Evaluation report", "", f"Model: `{card_doc['model'].get('adapter')}` "
             f"{card_doc['model'].get('model', '')} (sha256 `{card_doc['model'].get('model_sha256')}`)", "",
             "| task | n | primary metric | value | 95 % CI |", "|---|---|---|---|---|"]
    for name, r in results.items():
        value, ci = r["metrics"].get(r["primary"]), r["metrics"].get("ci95", {}).get(r["primary"])
        interval = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        lines.append(f"| {name} | {r['n']} | {r['primary']} | {_fmt(value)} | {interval} |")
    lines += ["", INTERVAL_NOTE, ""] + _paper_section(results)
    for name, r in results.items():
        lines += _task_section(name, r)
    lines += ["## Reproducibility card", "", "```json", json.dumps(card_doc, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _bars(ax, values: dict[str, tuple[float, list[float] | None]], ylabel: str, title: str) -> None:
    names = list(values)
    heights = [v for v, _ in values.values()]
    low = [v - ci[0] if ci else 0.0 for v, ci in values.values()]
    high = [ci[1] - v if ci else 0.0 for v, ci in values.values()]
    ax.bar(range(len(names)), heights, color="#4c72b0", yerr=[low, high], capsize=3, ecolor="#222222")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)


def plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Per task: the primary metric per category with 95 % error bars. Overview: the primary metric
    of every task, one panel per scale (0-100 scores apart from raw CIDEr-D-like scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, r in results.items():
        metric = r["primary"]
        values = {c: (m[metric], m.get("ci95", {}).get(metric)) for c, m in r["by_category"].items()
                  if isinstance(m.get(metric), float)}
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(values) + 2), 3.5))
        _bars(ax, values, metric, name if values else f"{name}: no numeric {metric}")
        written.append(_save(fig, folder / f"{name}.png"))
    panels = overview_panels(results)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.0 + 3.0 * max(1, len(panels)), 3.8), squeeze=False)
    for ax, (scale, values) in zip(axes[0], panels.items()):
        _bars(ax, values, scale, f"primary metric, {scale}")
    written.append(_save(fig, folder / "overview.png"))
    return written


def overview_panels(results: dict[str, Any]) -> dict[str, dict[str, tuple[float, list[float] | None]]]:
    """Primary metric (and interval) of every task, grouped by scale: 0-100 scores apart from raw ones."""
    panels: dict[str, dict] = {}
    for name, r in results.items():
        value = r["metrics"].get(r["primary"])
        if isinstance(value, float):
            scale = "score (0-100)" if r["primary"] in PERCENT_METRICS else "score (raw scale)"
            ci = r["metrics"].get("ci95", {}).get(r["primary"])
            panels.setdefault(scale, {})[f"{name} ({r['primary']})"] = (value, ci)
    return dict(sorted(panels.items()))


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path


def _rounded(doc: Any) -> Any:
    if isinstance(doc, float):
        return round(doc, 6)
    if isinstance(doc, dict):
        return {k: _rounded(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_rounded(v) for v in doc]
    return doc


def _dump(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(_rounded(doc), indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _earlier(out: Path, card_doc: dict, names: set[str]) -> tuple[dict, dict]:
    """Summaries and card entries of tasks an earlier run wrote into ``out`` and this run did not redo."""
    if not (out / "summary.json").is_file() or not (out / "card.json").is_file():
        return {}, {}
    summary, old_card = (read_json(out / f, RequestError) for f in ("summary.json", "card.json"))
    kept = {n: r for n, r in summary.get("tasks", {}).items() if n not in names}
    if kept and old_card.get("model", {}).get("model_sha256") != card_doc["model"].get("model_sha256"):
        raise RequestError(f"{out}/summary.json holds results of another model ({sorted(kept)}); use a new --out")
    return kept, {n: t for n, t in old_card.get("tasks", {}).items() if n in kept}


def write_all(config, description: dict, loaded: dict[str, tuple[Task, Benchmark]],
              results: dict[str, Any]) -> dict[str, Any]:
    out = config.out_dir
    for name, r in results.items():
        write_jsonl(out / name / "examples.jsonl", r["rows"], sort_keys=True, allow_nan=True)
    tasks = {n: {**{k: v for k, v in r.items() if k != "rows"},
                 "paper": paper.beside_ours(n, r) if config.paper_comparison else []}
             for n, r in results.items()}
    card_doc = card(config, description, loaded, results)
    kept, kept_card = _earlier(out, card_doc, set(tasks))
    tasks = dict(sorted({**kept, **tasks}.items()))
    card_doc["tasks"] = dict(sorted({**kept_card, **card_doc["tasks"]}.items()))
    summary = _rounded({"tasks": tasks})
    card_doc = _rounded(card_doc)
    _dump(out / "summary.json", summary)
    _dump(out / "card.json", card_doc)
    (out / "report.md").write_text(markdown(summary["tasks"], card_doc), encoding="utf-8")
    plots(summary["tasks"], out / "plots")
    return summary
