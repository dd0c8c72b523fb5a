"""Write the af2-nano stage 2/3 training manifest: the AudioSkills items whose answer is short (a
multiple-choice letter and option, or at most 4 words), without transcription and duration items.

Why: those items are answered from the audio in one or two tokens, so their loss is about listening;
long transcripts and captions make most of the per-token loss of the full manifest and mostly teach
the text side (measured in stage 1: own-audio and shuffled-audio accuracy stayed equal at 200 steps).

    python scripts/nano-short-manifest.py CORPUS   # -> CORPUS/manifests/AF2Corpus-AudioSkills-Short/train.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from af2.data.manifest import read_manifest, write_manifest

SKIP_TEMPLATES = ("temporal.duration", "speech.transcript")


def keep(item) -> bool:
    template = item.extra.get("provenance", {}).get("template", "")
    short = item.output.startswith("(") or len(item.output.split()) <= 4
    return short and not template.startswith(SKIP_TEMPLATES)


def main(corpus: str) -> None:
    src = Path(corpus) / "manifests" / "AF2Corpus-AudioSkills" / "train.json"
    manifest = read_manifest(src)
    items = [it for it in manifest.items if keep(it)]
    out = Path(corpus) / "manifests" / "AF2Corpus-AudioSkills-Short" / "train.json"
    write_manifest(out, items, split="train", split_path=items[0].split_path, flamingo_task="AF2Corpus-AudioSkills")
    print(f"{out}: {len(items)} of {len(manifest.items)} items")


if __name__ == "__main__":
    main(sys.argv[1])
