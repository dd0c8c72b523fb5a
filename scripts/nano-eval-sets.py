"""The fixed held-out evaluation sets of af2-nano's model card, sampled from `af2 eval from-corpus` output.

    python scripts/nano-eval-sets.py CORPUS_DIR EVAL_DATA OUT_ROOT [--short 240] [--long 90] [--seed 0]

Writes OUT_ROOT/data-short/mmau/mmau-test-mini.json (a seeded sample of the short-clip multiple-choice val
items) and OUT_ROOT/data-long/mmar/MMAR-meta.jsonl (a seeded sample of the long-audio multiple-choice val
items on recordings of 2 minutes or more; durations come from the corpus's LongAudio val manifest), and
OUT_ROOT/data-focus/mmau/mmau-test-mini.json: every short-clip multiple-choice val item of the attributes
stage 1 trains on (the templates of the corpus's AF2Corpus-AudioSkills-Focus manifest, made by
scripts/nano-short-manifest.py: kind of audio, speaker sex, voice, speaking rate, instrument, ...), to score
what stage 1 taught and what stage 2 keeps. The
folders sit at the same depth as EVAL_DATA's, so the relative audio paths stay valid.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from af2.data.manifest import read_manifest
from af2.jsonl import read_jsonl, write_jsonl


def template(item_id: str) -> str:
    """'AF2Corpus-AudioSkills/<clip>/speech.voice:mcq/3' -> 'speech.voice'."""
    return item_id.rsplit("/", 2)[-2].split(":")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("eval_data")
    ap.add_argument("out_root")
    ap.add_argument("--short", type=int, default=240)
    ap.add_argument("--long", type=int, default=90)
    ap.add_argument("--min-seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    src, out = Path(args.eval_data), Path(args.out_root)

    short = json.loads((src / "mmau" / "mmau-test-mini.json").read_text())
    picked = random.Random(args.seed).sample(short, min(args.short, len(short)))
    (out / "data-short" / "mmau").mkdir(parents=True, exist_ok=True)
    (out / "data-short" / "mmau" / "mmau-test-mini.json").write_text(json.dumps(picked, indent=1))

    focus_manifest = Path(args.corpus) / "manifests" / "AF2Corpus-AudioSkills-Focus" / "val.json"
    if not focus_manifest.is_file():
        raise SystemExit(f"nano-eval-sets: {focus_manifest} is missing; run scripts/nano-short-manifest.py first")
    focus_templates = {str(it.extra.get("provenance", {}).get("template", "")).split(":")[0]
                       for it in read_manifest(focus_manifest).items}
    focus = [item for item in short if template(item["id"]) in focus_templates]
    (out / "data-focus" / "mmau").mkdir(parents=True, exist_ok=True)
    (out / "data-focus" / "mmau" / "mmau-test-mini.json").write_text(json.dumps(focus, indent=1))

    long_manifest = read_manifest(Path(args.corpus) / "manifests" / "AF2Corpus-LongAudio" / "val.json")
    duration = {it.id: float(it.duration) for it in long_manifest.items}
    long_items = [r for _, r in read_jsonl(src / "mmar" / "MMAR-meta.jsonl").records if duration.get(r["id"], 0.0) >= args.min_seconds]
    picked_long = random.Random(args.seed).sample(long_items, min(args.long, len(long_items)))
    (out / "data-long" / "mmar").mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "data-long" / "mmar" / "MMAR-meta.jsonl", picked_long)
    print(f"{len(picked)} of {len(short)} short-clip items -> {out / 'data-short'}; "
          f"{len(picked_long)} of {len(long_items)} items on recordings >= {args.min_seconds:.0f} s -> {out / 'data-long'}; "
          f"{len(focus)} items of stage 1's attributes -> {out / 'data-focus'}")


if __name__ == "__main__":
    main()
