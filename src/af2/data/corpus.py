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
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from af2.audio import SAMPLE_RATE
from af2.audio.clips import write_flac
from af2.audio.decode import load_mono
from af2.data.check import check_manifests
from af2.data.giveaway import balance_answers, format_report, giveaway_report
from af2.data.catalog import DEFAULT_SOURCES, SOURCES
from af2.data.datasheet import datasheet, datasheet_markdown, held_out_summary
from af2.data.longaudio import Event, Timeline, compose, longaudio_qa
from af2.data.manifest import ManifestItem, write_manifest
from af2.data.qa import QAPair
from af2.data.qa.templates import build_pools, caption_qa, template_qa
from af2.data.sources import RESERVED, BuildContext, Clip, LongTrack, ReservedSourceError, SourceUnavailableError
from af2.errors import ConfigError, ManifestError
from af2.jsonl import write_jsonl

TASKS = {"skills": "AF2Corpus-AudioSkills", "caption": "AF2Corpus-AudioCaptioning", "long": "AF2Corpus-LongAudio"}


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    seed: int = 0
    sources: tuple[str, ...] = DEFAULT_SOURCES
    limit: int | None = None  # at most this many items per source
    scenes: int = 1000
    long: int = 240  # composed long recordings of the train split
    long_val: int = 80  # composed long recordings of the held-out split, made of held-out clips only
    long_seconds: tuple[float, float] = (60.0, 300.0)
    val_fraction: float = 0.1
    train_answer_slack: float = 3.0  # in train, no MC answer of a template correct over 3x as often as its rarest
    small_soundfont: bool = False
    progress: bool = True
    workers: int = 2  # parallel FluidSynth renders


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


def _collect(opts: BuildOptions, names: list[str]) -> tuple[list[Clip], list[LongTrack], dict[str, Any]]:
    clips: list[Clip] = []
    tracks: list[LongTrack] = []
    per_source: dict[str, dict[str, Any]] = {}
    for name in names:
        src = SOURCES[name]
        ctx = BuildContext(rng=np.random.default_rng([opts.seed, sum(map(ord, name))]), limit=opts.limit,
                           workdir=opts.out / "work", small=opts.small_soundfont, workers=opts.workers)
        t0, c0 = time.time(), _cpu()
        got = list(tqdm(src.collect(ctx), desc=f"source {name}", unit="item", disable=not opts.progress))
        (tracks if src.kind == "long" else clips).extend(got)
        per_source[name] = {"items": len(got), "licence": src.licence, "packages": list(src.packages), "kind": src.kind,
                            "skipped": dict(sorted(ctx.skipped.items()))}
        # timings go to stderr, not the datasheet, which stays byte-identical for one seed
        print(f"corpus: source {name}: {len(got)} items in {time.time() - t0:.1f} s wall, {_cpu() - c0:.1f} s CPU",
              file=sys.stderr)
        for reason, n in sorted(ctx.skipped.items()):
            print(f"corpus: source {name}: skipped {n} ({reason})", file=sys.stderr)
    if not clips:
        raise ConfigError("no clips collected; pick at least one clip source with --sources")
    dup = [k for k, n in Counter(c.id for c in clips).items() if n > 1]
    if dup:
        raise ManifestError(f"duplicate clip ids {dup[:5]}: two source files would share one audio path")
    return clips, tracks, per_source


def _scenes(out: Path, short: list[Clip], rng: np.random.Generator, count: int, split: str, first: int,
            progress: bool) -> list[Clip]:
    """Short scenes (8-20 s, 2-4 events with exact times) composed only from ``short`` (one split's clips)."""
    scenes: list[Clip] = []
    for i in tqdm(range(first, first + count), desc=f"scenes ({split})", unit="scene", disable=not progress):
        target = float(rng.uniform(8, 20))
        audio, tl = compose(f"scene/{i:05d}", short, rng, target, gap=(0.3, 1.5), repeats=int(rng.integers(1, 3)),
                            distinct_labels=True)
        if len(tl.events) < 2:
            continue
        scene = Clip(id=tl.id, source="scenes", category="scene", label="scene", audio=audio,
                     caption="A sequence of sounds: " + ", then ".join(e.label for e in tl.events) + ".",
                     attributes={"split": split},
                     events=[{"start": round(e.start, 3), "end": round(e.end, 3), "label": e.label,
                              "category": e.category, "transcript": e.transcript, "source_id": e.source_id}
                             for e in tl.events])
        write_flac(out / "audio" / "clips" / f"{tl.id}.flac", audio)
        _write_json(out / "timelines" / f"{tl.id}.json", tl.to_json())
        scenes.append(scene)
    return scenes


def _real_long(out: Path, tracks: list[LongTrack], progress: bool, workers: int = 1
               ) -> tuple[list[Timeline], list[tuple]]:
    """Decode and re-encode the real long tracks, ``workers`` at once (decoders and FLAC release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def convert(track: LongTrack) -> int:
        audio = load_mono(track.path)
        write_flac(out / "audio" / "long" / f"{track.id}.flac", audio)
        beds[track.id] = audio[: 60 * SAMPLE_RATE]
        return len(audio)

    beds: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        lengths = list(tqdm(pool.map(convert, tracks), total=len(tracks), desc="long real", unit="track",
                            disable=not progress))
    return _real_timelines(out, tracks, lengths, beds)


def _real_timelines(out: Path, tracks: list[LongTrack], lengths: list[int], first_minute: dict[str, np.ndarray]
                    ) -> tuple[list[Timeline], list[tuple]]:
    timelines: list[Timeline] = []
    beds: list[tuple[str, np.ndarray, str]] = []
    for track, n in zip(tracks, lengths):
        dur = n / SAMPLE_RATE
        ev = Event(start=0.0, end=round(dur, 3), label=f"music: {track.title}", category="music",
                   caption=track.attributes["caption"], source_id=track.id, attributes=track.attributes)
        tl = Timeline(id=track.id, duration=round(dur, 3), kind="real", events=[ev], title=track.title)
        _write_json(out / "timelines" / f"{tl.id}.json", tl.to_json())
        timelines.append(tl)
        if dur >= 30:
            beds.append((f"{track.attributes['mood']} music: {track.title}", first_minute[track.id], track.id))
    return timelines, beds


def _composed_long(out: Path, clips: list[Clip], beds: list[tuple], rng: np.random.Generator, count: int, first: int,
                   opts: BuildOptions, split: str) -> list[Timeline]:
    """Long recordings made only of ``clips`` and ``beds`` (one split's), numbered from ``first``."""
    pool = [c for c in clips if c.duration <= 25.0]
    needles = [c for c in pool if c.attributes.get("slot_questions")]
    timelines: list[Timeline] = []
    if not pool:
        return timelines
    with _Writer(opts.workers) as writer:
        for i in tqdm(range(first, first + count), desc=f"long composed ({split})", unit="rec",
                      disable=not opts.progress):
            timelines.append(_compose_one(out, pool, needles, beds, rng, i, opts, writer))
    return timelines


class _Writer:
    """FLAC encodes in background threads, at most ``2 * workers`` recordings waiting (bounded memory)."""

    def __init__(self, workers: int):
        from concurrent.futures import ThreadPoolExecutor

        self.pool, self.pending, self.limit = ThreadPoolExecutor(max_workers=max(1, workers)), [], 2 * max(1, workers)

    def write(self, path: Path, audio: np.ndarray) -> None:
        self.pending.append(self.pool.submit(write_flac, path, audio))
        while len(self.pending) > self.limit:
            self.pending.pop(0).result()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc: Any) -> None:
        for f in self.pending:
            f.result()
        self.pool.shutdown()


def _compose_one(out: Path, pool: list[Clip], needles: list[Clip], beds: list[tuple], rng: np.random.Generator,
                 i: int, opts: BuildOptions, writer: _Writer) -> Timeline:
    target = float(rng.uniform(*opts.long_seconds))
    needle = needles[int(rng.integers(len(needles)))] if needles else None
    bed = beds[int(rng.integers(len(beds)))] if beds and rng.random() < 0.3 else None
    audio, tl = compose(f"long/{i:05d}", pool, rng, target, gap=(0.5, 4.0), repeats=int(rng.integers(2, 6)),
                        needle=needle, bed=bed)
    writer.write(out / "audio" / "long" / f"{i:05d}.flac", audio)
    _write_json(out / "timelines" / f"{tl.id}.json", tl.to_json())
    return tl


def build_corpus(opts: BuildOptions) -> dict[str, Any]:
    """Build everything under ``opts.out``; returns the datasheet dict.

    Held-out split: every source clip and real track is assigned to ``train`` or ``val`` by a hash of its id;
    scenes and composed long recordings of the val split are made only of val clips (and val music beds), those
    of the train split only of train clips, so no val item shares audio with any train item."""
    names = resolve_sources(opts.sources)
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "work").mkdir(exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    t0, _LAST_CPU[0] = time.time(), _cpu()
    clips, tracks, per_source = _collect(opts, names)
    t0 = _stage("sources", t0)
    for clip in tqdm(clips, desc="write clips", unit="clip", disable=not opts.progress):
        write_flac(out / "audio" / "clips" / f"{clip.id}.flac", clip.audio)
    split_of = {c.id: _split(c.id, opts.seed, opts.val_fraction) for c in clips}
    split_of.update({t.id: _split(t.id, opts.seed, opts.val_fraction) for t in tracks})
    by_split = {sp: [c for c in clips if split_of[c.id] == sp] for sp in ("train", "val")}
    n_val_scenes = int(round(opts.scenes * opts.val_fraction))
    scenes: list[Clip] = []
    n_train_scenes = opts.scenes - n_val_scenes
    for sp, count, first in (("train", n_train_scenes, 0), ("val", n_val_scenes, n_train_scenes)):
        short = [c for c in by_split[sp] if c.duration <= 6.0 and c.category != "music"] or by_split[sp]
        if short:  # numbered by slot, not by scenes kept: a scene of fewer than 2 events is dropped
            scenes += _scenes(out, short, rng, count, sp, first, opts.progress)
    split_of.update({s.id: s.attributes["split"] for s in scenes})
    t0 = _stage("write clips and scenes", t0)
    timelines, beds = _real_long(out, tracks, opts.progress, opts.workers)
    t0 = _stage("real long recordings", t0)
    first = 0
    for sp, count in (("train", opts.long), ("val", opts.long_val)):
        sp_beds = [bd for bd in beds if split_of[bd[2]] == sp]
        made = _composed_long(out, by_split[sp], sp_beds, rng, count, first, opts, sp)
        split_of.update({t.id: sp for t in made})
        timelines += made
        first += count
    t0 = _stage("composed long recordings", t0)
    rows = _questions(opts, [c.meta() for c in clips], [s.meta() for s in scenes], timelines, clips, split_of)
    t0 = _stage("questions", t0)
    sheet = _finish(opts, clips, scenes, timelines, rows, per_source, split_of)
    _stage("manifests, check and datasheet", t0)
    return sheet


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


_LAST_CPU = [0.0]


def _stage(name: str, t0: float) -> float:
    """Report a build stage's wall and CPU time (ours and our renderers') on stderr (not in the datasheet, which
    stays byte-identical); returns now."""
    now, cpu = time.time(), _cpu()
    print(f"corpus: {name}: {now - t0:.1f} s wall, {cpu - _LAST_CPU[0]:.1f} s CPU", file=sys.stderr)
    _LAST_CPU[0] = cpu
    return now


def _questions(opts: BuildOptions, metas: list[dict], scene_metas: list[dict], timelines: list[Timeline],
               clips: list[Clip], split_of: dict[str, str]) -> dict[tuple[str, str], list[ManifestItem]]:
    pools = build_pools(metas + scene_metas)
    rows: dict[tuple[str, str], list[ManifestItem]] = {}

    def put(task: str, key: str, item_list: list[ManifestItem]) -> None:
        rows.setdefault((task, split_of[key]), []).extend(item_list)

    for meta, folder in [(m, "clips") for m in metas] + [(m, "scenes") for m in scene_metas]:
        name = f"clips/{meta['id']}.flac"
        refs = {"timeline": f"timelines/{meta['id']}.json"} if folder == "scenes" else {}
        qas = template_qa(meta, pools, opts.seed)
        put(TASKS["skills"], meta["id"], [_item(q, name=name, duration=meta["duration"], task=TASKS["skills"],
                                               index=k, extra=refs) for k, q in enumerate(qas)])
        put(TASKS["caption"], meta["id"], [_item(q, name=name, duration=meta["duration"], task=TASKS["caption"],
                                                 index=k, extra=refs) for k, q in enumerate(caption_qa(meta))])
    clip_audio = {c.id: c.audio for c in clips}
    for tl in timelines:
        name = f"long/{tl.id}.flac" if tl.kind == "real" else f"long/{tl.id.split('/')[1]}.flac"
        qas = longaudio_qa(tl, opts.seed, clip_audio)
        put(TASKS["long"], tl.id, [_item(q, name=name, duration=tl.duration, task=TASKS["long"], index=k,
                                         extra={"timeline": f"timelines/{tl.id}.json"}) for k, q in enumerate(qas)])
    # answer priors: held-out items exactly balanced per template (a text-only model scores chance on them),
    # training items capped so that the text alone teaches little
    return {(task, sp): balance_answers(lst, 1.0 if sp == "val" else opts.train_answer_slack)
            for (task, sp), lst in rows.items()}


def _finish(opts, clips, scenes, timelines, rows, per_source, split_of) -> dict[str, Any]:
    out = opts.out
    manifests = []
    for (task, split), items in sorted(rows.items()):
        path = write_manifest(out / "manifests" / task / f"{split}.json", items, split=split, split_path="audio",
                              flamingo_task=task)
        manifests.append(str(path.relative_to(out)))
    (out / "metadata").mkdir(exist_ok=True)
    metas = [c.meta() for c in clips] + [s.meta() for s in scenes]
    write_jsonl(out / "metadata" / "clips.jsonl", [{**m, "split": split_of[m["id"]]} for m in metas], sort_keys=True)
    report = check_manifests([out / m for m in manifests], out)
    if not report.ok:
        raise ManifestError(f"the corpus failed its own check:\n{report.format()}")
    giveaways = giveaway_report(it for lst in rows.values() for it in lst)
    flagged = {t: s.giveaways() for t, s in giveaways.items() if s.giveaways()}
    if flagged:
        print(format_report(giveaways), file=sys.stderr)
    sheet = datasheet(clips, scenes, timelines, rows, per_source, opts, manifests, TASKS)
    sheet["held_out"] = held_out_summary(rows, split_of, clips)
    sheet["giveaways"] = {t: dict(k) for t, k in flagged.items()}
    _write_json(out / "datasheet.json", sheet)
    (out / "datasheet.md").write_text(datasheet_markdown(sheet), encoding="utf-8")
    return sheet


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
