"""Model-card tables from finished `af2 eval` runs: one column per run (e.g. own / shuffled / silent audio),
one row per skill (category) and per duration band, each cell the accuracy with its 95 % interval.

    python scripts/nano-card-tables.py TASK LABEL=RUN_DIR [LABEL=RUN_DIR ...]
    e.g. python scripts/nano-card-tables.py mmau-test-mini own=eval/s2-own shuffled=eval/s2-shuf
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(row: dict) -> str:
    ci = row.get("ci95", {}).get("accuracy")
    return f"{row['accuracy']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def table(title: str, runs: dict[str, dict], pick) -> list[str]:
    names = list(dict.fromkeys(k for r in runs.values() for k in pick(r)))
    if not names:
        return []
    lines = [f"| {title} | n | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    for name in names:
        rows = [pick(r).get(name) for r in runs.values()]
        n = next(int(r["n"]) for r in rows if r)
        lines.append(f"| {name} | {n} | " + " | ".join(cell(r) if r else "" for r in rows) + " |")
    return lines + [""]


def main(task: str, specs: list[str]) -> None:
    runs = {}
    for spec in specs:
        label, _, path = spec.partition("=")
        summary = json.loads((Path(path) / "summary.json").read_text())
        if task not in summary["tasks"]:
            sys.exit(f"nano-card-tables: {path} has no task {task!r} (it has {sorted(summary['tasks'])})")
        runs[label] = summary["tasks"][task]
    overall = {label: {"all": {**r["metrics"], "n": r["n"]}} for label, r in runs.items()}
    lines = table("overall", overall, lambda r: r)
    lines += table("skill", runs, lambda r: r["by_category"])
    lines += table("duration", runs, lambda r: r["by_facet"].get("duration", {}))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
