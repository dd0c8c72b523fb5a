"""Benchmarks built from the held-out (val) split of this project's corpus (``af2 corpus build``),
so a trained model can be evaluated with data that installs here:

    <out>/manifests/<Task>/val.json   the val manifests as they are        -> task af2-manifest
    <out>/mmau/mmau-test-mini.json    short-clip multiple-choice val items  -> task mmau-test-mini
                                      (sub-category "needs words" / "needs sound": see ``needs``)
    <out>/mmar/MMAR-meta.jsonl        long-audio multiple-choice val items  -> task mmar
    <out>/manifests/audio             a link to the corpus audio (the manifests' split_path is "audio")

The multiple-choice files use the MMAU / MMAR layouts, so the official string-match rule scores
them. They are not MMAU or MMAR: the report's paper comparison does not apply to them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from af2.data.manifest import read_manifest
from af2.data.sources import SPOKEN_LABELS
from af2.errors import RequestError

_LISTED_OPTIONS = re.compile(r"\s*\(A\) .*$", re.DOTALL)


# What an answer needs besides hearing sounds: templates about the words spoken, and scene questions whose answer
# and some distractor are both spoken clips (told apart only by their words; the corpus builder starts their labels
# with SPOKEN_LABELS). The facet lets a report separate the items a model without speech recognition can answer
# from those it cannot.
_WORD_TEMPLATES = ("speech.sentence_type", "speech.words", "speech.situation", "speech.character")


def needs(template: str, options: list[str], answer: str) -> str:
    """``"words"`` when only recognising the spoken words answers the item, else ``"sound"``."""
    template = template.split(":")[0]
    if template in _WORD_TEMPLATES:
        return "words"
    if template.startswith("scene.") and answer.startswith(SPOKEN_LABELS):
        if any(o.startswith(SPOKEN_LABELS) for o in options if o != answer):
            return "words"
    return "sound"


def _mc_item(item, audio: Path, base: Path) -> dict[str, Any] | None:
    options, index = item.extra.get("options"), item.extra.get("answer_index")
    if not options or index is None:
        return None
    answer = options[int(index)]
    template = str((item.extra.get("provenance") or {}).get("template", ""))
    return {"id": item.id, "audio_id": os.path.relpath(audio, base), "audio_path": os.path.relpath(audio, base),
            "question": _LISTED_OPTIONS.sub("", item.prompt), "choices": list(options), "answer": answer,
            "task": str(item.extra.get("skill", "all")), "modality": item.flamingo_task or "all",
            "category": str(item.extra.get("skill", "all")),
            "sub-category": f"needs {needs(template, options, answer)}"}


def _originals(paths: list[Path]) -> list[tuple[Path, Any]]:
    """The manifests that are not a subset of a larger one: a derived manifest (a selection of another's items
    under the same ids, e.g. scripts/nano-short-manifest.py's) would repeat its items in the benchmarks."""
    manifests = [(path, read_manifest(path)) for path in paths]
    ids = [{item.id for item in m.items} for _, m in manifests]
    return [(path, m) for i, (path, m) in enumerate(manifests)
            if not any(len(other) > len(ids[i]) and ids[i] <= other for other in ids)]


def build_from_corpus(corpus: Path, out: Path, split: str = "val") -> dict[str, int]:
    """Write the three benchmark folders above into ``out``; returns the item count of each."""
    manifests = sorted((corpus / "manifests").glob(f"*/{split}.json"))
    if not manifests:
        raise RequestError(f"{corpus}/manifests/*/{split}.json: no held-out manifests; build the corpus with "
                           "`af2 corpus build --out DIR` first")
    out.mkdir(parents=True, exist_ok=True)
    (out / "mmau").mkdir(exist_ok=True)
    (out / "mmar").mkdir(exist_ok=True)
    short, long, total = [], [], 0
    for path, manifest in _originals(manifests):
        target = out / "manifests" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        for item in manifest.items:
            total += 1
            audio = (corpus / item.split_path / item.name).resolve()
            is_long = "long" in (item.flamingo_task or "").lower()
            row = _mc_item(item, audio, out / ("mmar" if is_long else "mmau"))
            if row is not None:
                (long if is_long else short).append(row)
    link = out / "manifests" / "audio"
    if not link.exists():
        link.symlink_to((corpus / "audio").resolve(), target_is_directory=True)
    if not short or not long:
        raise RequestError(f"{corpus}: the {split} split has {len(short)} short and {len(long)} long multiple-choice "
                           "items; both are needed (build a larger corpus)")
    (out / "mmau" / "mmau-test-mini.json").write_text(json.dumps(short, indent=1, ensure_ascii=False), encoding="utf-8")
    (out / "mmar" / "MMAR-meta.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in long),
                                                  encoding="utf-8")
    return {"af2-manifest": total, "mmau-test-mini": len(short), "mmar": len(long)}
