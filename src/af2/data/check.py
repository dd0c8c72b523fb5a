"""``af2 data check``: validate manifests before training on them.

Problems found (each counted, with examples naming file, entry and problem):
    malformed_manifest   the file is not valid JSON / not the AF2 layout / a bad line in JSONL
    malformed_entry      an entry lacks a field or has the wrong type
    missing_audio        the resolved audio file does not exist
    unreadable_audio     the file exists but neither libsndfile nor FFmpeg can read its header
    empty_prompt         prompt is empty or whitespace
    empty_output         output is empty or whitespace
    bad_duration         duration is not positive, or audio_start + duration overruns the file, or
                         (for whole-file items, audio_start == 0) differs from the file's length
                         by more than the tolerance
    duplicate_id         an id seen before (across all manifests checked together)

Audio is probed from its header (soundfile, then PyAV), never fully decoded.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from af2.data.manifest import ManifestError, _item_from_entry

PROBLEM_KINDS = ("malformed_manifest", "malformed_entry", "missing_audio", "unreadable_audio", "empty_prompt",
                 "empty_output", "bad_duration", "duplicate_id")


@dataclass(frozen=True)
class Problem:
    kind: str
    file: str
    entry: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: entry {self.entry}: {self.message}"


@dataclass
class CheckReport:
    items: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, examples: int = 3) -> str:
        lines = [f"checked {self.items} items: {len(self.problems)} problems"]
        by_kind: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            by_kind[p.kind].append(p)
        for kind in PROBLEM_KINDS:
            if kind in by_kind:
                lines.append(f"  {kind}: {len(by_kind[kind])}")
                lines.extend(f"    e.g. {p}" for p in by_kind[kind][:examples])
        return "\n".join(lines)


def audio_duration(path: str | os.PathLike) -> float:
    """Length in seconds from the file header (libsndfile first, FFmpeg for everything else)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        if info.samplerate > 0 and info.frames > 0:
            return info.frames / info.samplerate
    except (RuntimeError, soundfile.LibsndfileError):
        pass
    import av

    with av.open(str(path)) as container:
        if container.duration is not None:
            return container.duration / 1_000_000  # av.time_base
        stream = container.streams.audio[0]
        if stream.duration is None or stream.time_base is None:
            raise ValueError(f"{path}: no duration in the header")
        return float(stream.duration * stream.time_base)


def _entries(path: Path, report: CheckReport):
    """Yield (entry key, raw entry, header) from a JSON or JSONL manifest, recording layout problems."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                report.problems.append(Problem("malformed_manifest", str(path), f"line {lineno}",
                                               f"malformed JSON: {exc.msg}"))
                continue
            if not isinstance(entry, dict) or "id" not in entry:
                report.problems.append(Problem("malformed_entry", str(path), f"line {lineno}",
                                               "expected an object with an 'id' field"))
                continue
            header = {k: str(entry.get(k, d)) for k, d in
                      (("split", path.stem), ("split_path", ""), ("flamingo_task", path.parent.name))}
            yield f"line {lineno}", entry, header
        return
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        report.problems.append(Problem("malformed_manifest", str(path), "-",
                                       f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"))
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        report.problems.append(Problem("malformed_manifest", str(path), "-",
                                       "expected an object with a 'data' object (AF2 manifest format)"))
        return
    header = {"split": str(doc.get("split", path.stem)), "split_path": str(doc.get("split_path", "")),
              "flamingo_task": str(doc.get("flamingo_task", path.parent.name))}
    keys = list(doc["data"])
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        report.problems.append(Problem("malformed_manifest", str(path), "-",
                                       f"keys of 'data' must be \"0\"..\"{len(keys) - 1}\""))
    for key in keys:
        yield key, doc["data"][key], header


def check_manifests(paths: list[str | os.PathLike], data_root: str | os.PathLike,
                    duration_tolerance: float = 0.5) -> CheckReport:
    """Check every entry of every manifest; audio resolves as ``data_root/split_path/name``."""
    report = CheckReport()
    seen_ids: dict[str, str] = {}
    durations: dict[Path, float | Exception] = {}  # one probe per audio file, however many QA items
    for raw_path in paths:
        path = Path(raw_path)
        if not path.is_file():
            report.problems.append(Problem("malformed_manifest", str(path), "-", "file not found"))
            continue
        for key, raw, header in _entries(path, report):
            report.items += 1
            where = str(path)
            try:
                item = _item_from_entry(raw, f"entry {key}", split=header["split"], split_path=header["split_path"],
                                        task=header["flamingo_task"],
                                        default_id=f"{header['flamingo_task']}/{header['split']}/{key}")
            except ManifestError as exc:
                report.problems.append(Problem("malformed_entry", where, key, str(exc).split(": ", 1)[-1]))
                continue
            if item.id in seen_ids:
                report.problems.append(Problem("duplicate_id", where, key,
                                               f"id {item.id!r} already used at {seen_ids[item.id]}"))
            else:
                seen_ids[item.id] = f"{path}: entry {key}"
            if not item.prompt.strip():
                report.problems.append(Problem("empty_prompt", where, key, "prompt is empty"))
            if not item.output.strip():
                report.problems.append(Problem("empty_output", where, key, "output is empty"))
            if item.duration <= 0 or item.audio_start < 0:
                report.problems.append(Problem("bad_duration", where, key,
                                               f"duration {item.duration} / audio_start {item.audio_start} "
                                               "must be positive / non-negative"))
            audio = item.audio_path(data_root)
            if audio not in durations:
                if not audio.is_file():
                    durations[audio] = FileNotFoundError(str(audio))
                else:
                    try:
                        durations[audio] = audio_duration(audio)
                    except Exception as exc:  # any decoder failure means "unreadable"; it is reported
                        durations[audio] = exc
            real = durations[audio]
            if isinstance(real, FileNotFoundError):
                report.problems.append(Problem("missing_audio", where, key, f"audio not found: {audio}"))
            elif isinstance(real, Exception):
                report.problems.append(Problem("unreadable_audio", where, key,
                                               f"cannot read {audio}: {type(real).__name__}: {real}"))
            elif item.duration > 0:
                overrun = item.audio_start + item.duration - real
                mismatch = item.audio_start == 0 and abs(item.duration - real) > duration_tolerance
                if overrun > duration_tolerance or mismatch:
                    report.problems.append(Problem("bad_duration", where, key,
                                                   f"duration {item.duration:.3f} s (start {item.audio_start:.3f})"
                                                   f" but {audio.name} is {real:.3f} s long"))
    return report
