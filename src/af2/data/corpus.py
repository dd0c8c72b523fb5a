"""``af2 corpus build``: the offline training corpus (audio, manifests, timelines, datasheet).

Layout of ``--out DIR`` (the data root)::

    audio/clips/<clip id>.flac       short clips, 16 kHz mono FLAC
    audio/clips/scene/<n>.flac       short multi-event scenes (8-20 s) with exact event times
    audio/long/<id>.flac             long recordings: composed (with timelines) and real music
    timelines/<id>.json              the exact timeline of every long recording and scene
    metadata/clips.jsonl             the metadata every question was generated from
    manifests/<Task>/<split>.json    AF2 manifests (split_path "audio"), train and val
    datasheet.md, datasheet.json     counts, durations, label distribution, licences

Deterministic: the same seed, sources and limits give byte-identical manifests.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from af2.data.audio_io import load_mono_16k, write_flac
from af2.data.check import check_manifests
from af2.data.catalog import SOURCES
from af2.data.longaudio import Event, Timeline, compose, longaudio_qa
from af2.data.manifest import ManifestItem, write_manifest
from af2.data.qa import QAPair, SKILLS
from af2.data.qa.templates import build_pools, caption_qa, template_qa
from af2.data.sources import RESERVED, BuildContext, Clip, LongTrack, ReservedSourceError, SourceUnavailableError
from af2.errors import ConfigError, ManifestError
from af2.jsonl import write_jsonl

TASKS = {"skills": "AF2Corpus-AudioSkills", "caption": "AF2Corpus-AudioCaptioning", "long": "AF2Corpus-LongAudio"}


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    seed: int = 0
    sources: tuple[str, ...] = tuple(SOURCES)
    limit: int | None = None  # at most this many items per source
    scenes: int = 500
    long: int = 240
    long_seconds: tuple[float, float] = (60.0, 300.0)
    val_fraction: float = 0.05
    small_soundfont: bool = False
    progress: bool = True


def resolve_sources(names: Sequence[str]) -> list[str]:
    """Validate source names: reserved ones are refused, unknown ones named with the choices."""
    out = []
    for name in names:
        if name in RESERVED:
            raise ReservedSourceError(f"source {name!r} is reserved for evaluation and never enters the corpus")
        if name not in SOURCES:
            raise ConfigError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}")
        out.append(name)
    missing = [n for n in out if not SOURCES[n].probe()]
    if missing:
        need = sorted({p for n in missing for p in SOURCES[n].packages})
        raise SourceUnavailableError(f"source(s) {', '.join(missing)} not installed (need {', '.join(need)}); "
                                     "run scripts/install-corpus-sources.sh (or --small for the CI sample)")
    return out


def _split(key: str, seed: int, fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")
    return "val" if h / 2**32 < fraction else "train"


def _item(qa: QAPair, *, name: str, duration: float, task: str, index: int, extra: dict[str, Any]) -> ManifestItem:
    return ManifestItem(id=f"{task}/{qa.sources[0]}/{qa.template}/{index}", name=name, prompt=qa.question,
                        output=qa.answer, duration=round(duration, 3), split_path="audio", flamingo_task=task,
                        extra={"skill": qa.skill, "provenance": qa.provenance(), **extra, **qa.extra})


def build_corpus(opts: BuildOptions) -> dict[str, Any]:
    """Build everything under ``opts.out``; returns the datasheet dict."""
    names = resolve_sources(opts.sources)
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "work").mkdir(exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    clips: list[Clip] = []
    tracks: list[LongTrack] = []
    per_source: dict[str, dict[str, Any]] = {}
    for name in names:
        src = SOURCES[name]
        ctx = BuildContext(rng=np.random.default_rng([opts.seed, sum(map(ord, name))]), limit=opts.limit,
                           workdir=out / "work", small=opts.small_soundfont)
        got = list(tqdm(src.collect(ctx), desc=f"source {name}", unit="item", disable=not opts.progress))
        (tracks if src.kind == "long" else clips).extend(got)
        per_source[name] = {"items": len(got), "licence": src.licence, "packages": list(src.packages), "kind": src.kind,
                            "skipped": dict(sorted(ctx.skipped.items()))}
        for reason, n in sorted(ctx.skipped.items()):
            print(f"corpus: source {name}: skipped {n} ({reason})", file=sys.stderr)
    if not clips:
        raise ConfigError("no clips collected; pick at least one clip source with --sources")
    dup = [k for k, n in Counter(c.id for c in clips).items() if n > 1]
    if dup:
        raise ManifestError(f"duplicate clip ids {dup[:5]}: two source files would share one audio path")

    for clip in tqdm(clips, desc="write clips", unit="clip", disable=not opts.progress):
        write_flac(out / "audio" / "clips" / f"{clip.id}.flac", clip.audio)
    metas = [c.meta() for c in clips]

    # short scenes: 2-4 short clips with exact times, for temporal and counting skills
    short = [c for c in clips if c.duration <= 6.0 and c.category != "music"] or clips
    scenes: list[Clip] = []
    for i in tqdm(range(opts.scenes), desc="scenes", unit="scene", disable=not opts.progress):
        target = float(rng.uniform(8, 20))
        audio, tl = compose(f"scene/{i:05d}", short, rng, target, gap=(0.3, 1.5), repeats=int(rng.integers(1, 3)))
        if len(tl.events) < 2:
            continue
        scene = Clip(id=tl.id, source="scenes", category="scene", label="scene", audio=audio,
                     caption="A sequence of sounds: " + ", then ".join(e.label for e in tl.events) + ".",
                     events=[{"start": round(e.start, 3), "end": round(e.end, 3), "label": e.label,
                              "category": e.category, "transcript": e.transcript, "source_id": e.source_id}
                             for e in tl.events])
        write_flac(out / "audio" / "clips" / f"{tl.id}.flac", audio)
        _write_json(out / "timelines" / f"{tl.id}.json", tl.to_json())
        scenes.append(scene)
    scene_metas = [s.meta() for s in scenes]

    # long recordings: real music with its annotation, and composed recordings with timelines
    timelines: list[Timeline] = []
    beds: list[tuple[str, np.ndarray, str]] = []
    for track in tqdm(tracks, desc="long real", unit="track", disable=not opts.progress):
        audio = load_mono_16k(track.path)
        write_flac(out / "audio" / "long" / f"{track.id}.flac", audio)
        dur = len(audio) / 16_000
        ev = Event(start=0.0, end=round(dur, 3), label=f"music: {track.title}", category="music",
                   caption=track.attributes["caption"], source_id=track.id, attributes=track.attributes)
        tl = Timeline(id=track.id, duration=round(dur, 3), kind="real", events=[ev], title=track.title)
        _write_json(out / "timelines" / f"{tl.id}.json", tl.to_json())
        timelines.append(tl)
        if dur >= 30:
            beds.append((f"{track.attributes['mood']} music: {track.title}", audio[: 60 * 16_000], track.id))
    pool = [c for c in clips if c.duration <= 25.0]
    needles = [c for c in clips if c.attributes.get("slot_questions")]
    clip_audio = {c.id: c.audio for c in clips}
    for i in tqdm(range(opts.long), desc="long composed", unit="rec", disable=not opts.progress):
        target = float(rng.uniform(*opts.long_seconds))
        needle = needles[int(rng.integers(len(needles)))] if needles else None
        bed = beds[int(rng.integers(len(beds)))] if beds and rng.random() < 0.3 else None
        audio, tl = compose(f"long/{i:05d}", pool, rng, target, gap=(0.5, 4.0), repeats=int(rng.integers(2, 6)),
                            needle=needle, bed=bed)
        write_flac(out / "audio" / "long" / f"{i:05d}.flac", audio)
        _write_json(out / "timelines" / f"{tl.id}.json", tl.to_json())
        timelines.append(tl)

    # questions and manifests
    pools = build_pools(metas + scene_metas)
    rows: dict[tuple[str, str], list[ManifestItem]] = {}

    def put(task: str, key: str, item_list: list[ManifestItem]) -> None:
        rows.setdefault((task, _split(key, opts.seed, opts.val_fraction)), []).extend(item_list)

    for meta, folder in [(m, "clips") for m in metas] + [(m, "scenes") for m in scene_metas]:
        name = f"clips/{meta['id']}.flac"
        refs = {"timeline": f"timelines/{meta['id']}.json"} if folder == "scenes" else {}
        qas = template_qa(meta, pools, opts.seed)
        put(TASKS["skills"], meta["id"], [_item(q, name=name, duration=meta["duration"], task=TASKS["skills"],
                                               index=k, extra=refs) for k, q in enumerate(qas)])
        put(TASKS["caption"], meta["id"], [_item(caption_qa(meta), name=name, duration=meta["duration"],
                                                 task=TASKS["caption"], index=0, extra=refs)])
    for tl in timelines:
        name = f"long/{tl.id}.flac" if tl.kind == "real" else f"long/{tl.id.split('/')[1]}.flac"
        qas = longaudio_qa(tl, opts.seed, clip_audio)
        put(TASKS["long"], tl.id, [_item(q, name=name, duration=tl.duration, task=TASKS["long"], index=k,
                                         extra={"timeline": f"timelines/{tl.id}.json"}) for k, q in enumerate(qas)])
    manifests = []
    for (task, split), items in sorted(rows.items()):
        path = write_manifest(out / "manifests" / task / f"{split}.json", items, split=split, split_path="audio",
                              flamingo_task=task)
        manifests.append(str(path.relative_to(out)))
    (out / "metadata").mkdir(exist_ok=True)
    write_jsonl(out / "metadata" / "clips.jsonl", metas + scene_metas, sort_keys=True)
    report = check_manifests([out / m for m in manifests], out)
    if not report.ok:
        raise ManifestError(f"the corpus failed its own check:\n{report.format()}")
    sheet = datasheet(clips, scenes, timelines, rows, per_source, opts, manifests)
    _write_json(out / "datasheet.json", sheet)
    (out / "datasheet.md").write_text(datasheet_markdown(sheet), encoding="utf-8")
    return sheet


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def datasheet(clips, scenes, timelines, rows, per_source, opts, manifests) -> dict[str, Any]:
    items = [it for lst in rows.values() for it in lst]
    long_composed = [t for t in timelines if t.kind == "composed"]
    in_range = [t for t in long_composed if 60 <= t.duration <= 300]
    by_skill = Counter(it.extra["skill"] for it in items if it.flamingo_task == TASKS["skills"])
    by_long = Counter(it.extra["skill"] for it in items if it.flamingo_task == TASKS["long"])
    return {
        "seed": opts.seed, "sources": per_source, "reserved_for_evaluation": sorted(RESERVED),
        "clips": {"count": len(clips), "hours": round(sum(c.duration for c in clips) / 3600, 3),
                  "by_category": dict(sorted(Counter(c.category for c in clips).items())),
                  "by_source": dict(sorted(Counter(c.source for c in clips).items())),
                  "top_labels": dict(Counter(c.label for c in clips).most_common(40))},
        "scenes": {"count": len(scenes), "hours": round(sum(s.duration for s in scenes) / 3600, 3)},
        "long": {"composed": len(long_composed), "composed_1_to_5_min": len(in_range),
                 "real": len(timelines) - len(long_composed),
                 "hours": round(sum(t.duration for t in timelines) / 3600, 3),
                 "events": sum(len(t.events) for t in long_composed)},
        "qa": {"total": len(items), "audioskills_by_skill": dict(sorted(by_skill.items())),
               "longaudio_by_category": dict(sorted(by_long.items())),
               "multiple_choice": sum(1 for it in items if it.extra["provenance"]["template"].endswith(":mcq")),
               "captions": sum(1 for it in items if it.flamingo_task == TASKS["caption"]),
               "skills_missing": [s for s in SKILLS if s not in by_skill]},
        "manifests": {m: len(rows[(Path(m).parent.name, Path(m).stem)]) for m in manifests},
    }


def datasheet_markdown(s: dict[str, Any]) -> str:
    lines = ["# AF2 offline corpus: datasheet", "", f"Seed {s['seed']}. Audio is 16 kHz mono FLAC. "
             f"Reserved for evaluation and never included: {', '.join(s['reserved_for_evaluation'])}.", "",
             "## Totals", "", "| what | count | hours |", "|---|---|---|",
             f"| clips | {s['clips']['count']} | {s['clips']['hours']} |",
             f"| scenes (8-20 s, with timelines) | {s['scenes']['count']} | {s['scenes']['hours']} |",
             f"| long recordings, composed (1-5 min: {s['long']['composed_1_to_5_min']}) | {s['long']['composed']} | "
             f"{s['long']['hours']} (all long) |", f"| long recordings, real music | {s['long']['real']} | |",
             f"| QA pairs (incl. {s['qa']['multiple_choice']} multiple-choice, {s['qa']['captions']} captions) | "
             f"{s['qa']['total']} | |", "", "## Sources and licences", "", "| source | kind | items | packages | licence |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['kind']} | {v['items']} | {', '.join(v['packages'])} | {v['licence']} |"
              for k, v in s["sources"].items()]
    lines += ["", "## QA by AudioSkills skill", "", "| skill | pairs |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["qa"]["audioskills_by_skill"].items()]
    lines += ["", "## QA by LongAudio category", "", "| category | pairs |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["qa"]["longaudio_by_category"].items()]
    lines += ["", "## Clips by category and source", "", "| category | clips |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["clips"]["by_category"].items()]
    lines += ["", "| source | clips |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["clips"]["by_source"].items()]
    lines += ["", "## Most frequent clip labels", "", "| label | clips |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["clips"]["top_labels"].items()]
    lines += ["", "## Manifests", "", "| manifest | items |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["manifests"].items()]
    return "\n".join(lines) + "\n"
