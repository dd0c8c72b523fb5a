"""Figures for docs/af2-nano/: each stage's loss, and the listening check (accuracy with own vs shuffled
audio, feature cosine) over the whole curriculum, from the runs' metrics.jsonl files.

    python scripts/nano-report.py RUNS_DIR OUT_DIR      # e.g. runs docs/af2-nano
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = ("nano_stage0", "nano_stage1", "nano_stage2", "nano_stage3")


def rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def main(runs: str, out: str) -> None:
    runs_dir, out_dir = Path(runs), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(STAGES), figsize=(4 * len(STAGES), 3), squeeze=False)
    offset, listen, summary = 0, [], {}
    for ax, stage in zip(axes[0], STAGES):
        data = rows(runs_dir / stage)
        if not data:
            ax.set_title(f"{stage}: not run")
            continue
        steps = [r["step"] for r in data]
        ax.plot(steps, [r["loss"] for r in data], lw=0.6)
        ax.set_title(f"{stage} loss")
        ax.set_xlabel("step")
        summary[stage] = {"steps": steps[-1], "first_loss": data[0]["loss"], "last_loss": data[-1]["loss"],
                          "samples_per_s": sum(r["samples_per_s"] for r in data) / len(data)}
        for r in data:
            if "listen_acc" in r:
                listen.append((offset + r["step"], stage, r["listen_acc"], r["listen_acc_shuffled"],
                               r["listen_chance"], r["feature_cosine"]))
        offset += steps[-1]
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=110)
    if listen:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        x = [r[0] for r in listen]
        a1.plot(x, [r[2] for r in listen], "o-", label="own audio")
        a1.plot(x, [r[3] for r in listen], "s--", label="shuffled audio")
        a1.plot(x, [r[4] for r in listen], ":", color="grey", label="chance")
        a1.set_xlabel("curriculum step (stages 1-3 back to back)")
        a1.set_ylabel("held-out MC accuracy")
        a1.legend()
        a2.plot(x, [r[5] for r in listen], "o-")
        a2.axhline(0.95, color="red", ls=":", label="collapse warning")
        a2.set_ylabel("mean pairwise cosine of audio features")
        a2.set_xlabel("curriculum step")
        a2.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "listening.png", dpi=110)
    (out_dir / "training.json").write_text(json.dumps({"stages": summary, "listen": [
        dict(zip(("step", "stage", "acc_own", "acc_shuffled", "chance", "feature_cosine"), r)) for r in listen]},
        indent=1))
    print(f"wrote {out_dir}/loss.png, listening.png, training.json")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
