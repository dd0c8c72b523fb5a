"""Write af2-nano's training manifests from the corpus's AudioSkills items:

- AF2Corpus-AudioSkills-Short/train.json (stages 2-3): the items whose answer is short (a
  multiple-choice option, or at most 4 words), without transcription and duration items; multiple-choice
  answers are written as the option's text without its letter ("speech", not "(D) speech").
  Those items are answered from the audio in one or two tokens, so their loss is about listening; long
  transcripts and captions make most of the per-token loss of the full manifest and mostly teach the
  text side (measured in stage 1: own-audio and shuffled-audio accuracy stayed equal at 200 steps).
- AF2Corpus-AudioSkills-Focus/{train,val}.json (stage 1): the short items of a few acoustic attributes
  (kind of audio, speaker sex, voice, speaking rate, instrument and its family, tempo, dynamics, vocal
  sounds), open and multiple-choice (answers as option text). Measured: on the full short mix (about 100
  templates, each 1-8 % of the items) the cross-attention gates did not open in 100 steps of stage 1;
  concentrating the gradient on a few attributes that the stage-0 tower separates linearly is the first step.
- AF2Corpus-AudioSkills-Acoustic/{train,val}.json (stage 2): Focus plus the other attributes that are
  heard rather than understood (sentence type, character voice, musical mode, pitch pattern, mood), and
  AF2Corpus-AudioSkills-Scenes/{train,val}.json: the order and position of events in a scene (first, last,
  which comes first, where, what follows). Left out: what needs the words understood (transcripts, slots,
  situations, meanings, word counts, language) and exact figures (key, bpm, notes, event counts). Round 2
  measured that spreading stage 2 over all ~100 templates lost stage 1's listening within 188 steps.

- AF2Corpus-AudioSkills-Order/{train,val}.json (round 14's focused runs, docs/af2-nano/history.md): the Scenes
  items whose answer can be told from sound (not a spoken phrase among spoken options) and the pitch and
  loudness trends (music.pattern, music.dynamics).

- AF2Corpus-LongAudio-Text/train.json (stage 3): the LongAudio items, multiple-choice answers as text.

Why the option text: a frozen 135M LM does not bind an answer to its letter. After stage 1 the model
told kinds of audio apart in open answers (answer NLL 0.76 with its own audio vs 1.17 with another
clip's) while its letter choice stayed at chance; the official string match (MMAU, MMAR) scores the
words of the answer, not the letter, so an answer given as the option's text is scored the same way.

    python scripts/nano-short-manifest.py CORPUS
"""

from __future__ import annotations

import sys
from pathlib import Path

import re
from dataclasses import replace

from af2.data.manifest import read_manifest, write_manifest
from af2.eval.corpus_tasks import SPOKEN_LABELS, needs

SKIP_TEMPLATES = ("temporal.duration", "speech.transcript")
FOCUS_TEMPLATES = ("general.category", "speech.gender", "speech.voice", "speech.rate", "music.family",
                   "music.instrument", "music.tempo", "music.dynamics", "vocal.label")


def template(item) -> str:
    return item.extra.get("provenance", {}).get("template", "")


def short(item) -> bool:
    brief = item.output.startswith("(") or len(item.output.split()) <= 4
    return brief and not template(item).startswith(SKIP_TEMPLATES)


ACOUSTIC_TEMPLATES = FOCUS_TEMPLATES + ("speech.sentence_type", "speech.character", "music.mode", "music.pattern",
                                        "music.mood")
SCENE_TEMPLATES = ("scene.first", "scene.last", "scene.order", "scene.position", "scene.after")


def of(templates: tuple[str, ...]):
    """Keep the short items made by one of these templates (open or multiple-choice)."""
    return lambda item: short(item) and template(item).removesuffix(":mcq") in templates


_LETTERED = re.compile(r"^\([A-H]\)\s*(.+)$")


TREND_TEMPLATES = ("music.pattern", "music.dynamics")


def heard_scene(item) -> bool:
    """A short scene item whose answer can be told from sound: not a spoken phrase among spoken options."""
    if not of(SCENE_TEMPLATES)(item):
        return False
    answer, options = option_text(item).output, item.extra.get("options") or []
    if not options:  # an open answer that is a spoken phrase has no sound option to tell it from
        return not answer.startswith(SPOKEN_LABELS)
    return needs(template(item), options, answer) == "sound"  # af2 eval's own "needs sound"


def option_text(item):
    """The item with a multiple-choice answer "(B) text" written as "text"."""
    found = _LETTERED.match(item.output.strip())
    return replace(item, output=found.group(1)) if found else item


def write(corpus: Path, split: str, name: str, *keeps, text_answers: bool = False,
          source: str = "AF2Corpus-AudioSkills") -> None:
    """The items each ``keeps`` predicate selects, one predicate after another (so their order is the file's
    within each), written as manifest ``name``."""
    manifest = read_manifest(corpus / "manifests" / source / f"{split}.json")
    items = [option_text(it) if text_answers else it for keep in keeps for it in manifest.items if keep(it)]
    out = corpus / "manifests" / name / f"{split}.json"
    write_manifest(out, items, split=split, split_path=items[0].split_path, flamingo_task=source)
    print(f"{out}: {len(items)} of {len(manifest.items)} items")


def main(corpus: str) -> None:
    root = Path(corpus)
    write(root, "train", "AF2Corpus-AudioSkills-Short", short, text_answers=True)
    write(root, "train", "AF2Corpus-LongAudio-Text", lambda it: True, text_answers=True, source="AF2Corpus-LongAudio")
    for split in ("train", "val"):
        for name, templates in (("Focus", FOCUS_TEMPLATES), ("Acoustic", ACOUSTIC_TEMPLATES), ("Scenes", SCENE_TEMPLATES)):
            write(root, split, f"AF2Corpus-AudioSkills-{name}", of(templates), text_answers=True)
        write(root, split, "AF2Corpus-AudioSkills-Order", heard_scene, of(TREND_TEMPLATES), text_answers=True)


if __name__ == "__main__":
    main(sys.argv[1])
