"""``af2 data check``: validate manifests before training on them.

Problems found (each counted, with examples naming file, entry and problem):
    malformed_manifest   the file is not valid JSON / not the AF2 layout / a bad line in JSONL
    malformed_entry      an entry lacks a field or has the wrong type
    outside_root         the audio path leaves the data root (``..``, an absolute path, a symlink
                         pointing out); it is not opened unless allow_outside_root is set
    missing_audio        the resolved audio file does not exist
    unreadable_audio     the file exists but neither libsndfile nor FFmpeg can read its header
    empty_prompt         prompt is empty or whitespace
    empty_output         output is empty or whitespace
    bad_duration         duration is not positive, or audio_start + duration overruns the file, or
                         (for whole-file items, audio_start == 0) differs from the file's length
                         by more than the tolerance
    duplicate_id         an id seen before (across all manifests checked together)

Audio is probed from its header (soundfile, then PyAV), never fully decoded, and only inside the
data root.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from af2.audio.decode import probe
from af2.data.manifest import ManifestError, _item_from_entry
from af2.jsonl import read_json, read_jsonl

PROBLEM_KINDS = ("malformed_manifest", "malformed_entry", "outside_root", "missing_audio", "unreadable_audio", "empty_prompt",
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


def _entries(path: Path, report: CheckReport):
    """Yield (entry key, raw entry, header) from a JSON or JSONL manifest, recording layout problems."""
    def bad(entry: str, message: str) -> None:
        report.problems.append(Problem("malformed_manifest", str(path), entry, message))

    if path.suffix == ".jsonl":
        try:
            found = read_jsonl(path, strict=False, error=ManifestError)
        except ManifestError as exc:
            bad("-", str(exc).split(": ", 1)[-1])
            return
        for lineno, message in found.bad_lines:
            bad(f"line {lineno}", message.split(": ", 1)[-1])
        for lineno, entry in found.records:
            if not isinstance(entry, dict) or "id" not in entry:
                report.problems.append(Problem("malformed_entry", str(path), f"line {lineno}",
                                               "expected an object with an 'id' field"))
                continue
            header = {k: entry.get(k, d) for k, d in
                      (("split", path.stem), ("split_path", ""), ("flamingo_task", path.parent.name))}
            yield f"line {lineno}", entry, header
        return
    try:
        doc = read_json(path, ManifestError)
    except ManifestError as exc:
        bad("-", str(exc).split(": ", 1)[-1])
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        bad("-", "expected an object with a 'data' object (AF2 manifest format)")
        return
    header = {"split": doc.get("split", path.stem), "split_path": doc.get("split_path", ""),
              "flamingo_task": doc.get("flamingo_task", path.parent.name)}
    keys = list(doc["data"])
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        bad("-", f"keys of 'data' must be \"0\"..\"{len(keys) - 1}\"")
    for key in keys:
        yield key, doc["data"][key], header


def _probe(audio: Path) -> float | Exception:
    """The file's duration, or the reason it has none (missing, unreadable)."""
    try:
        if not audio.is_file():  # also keeps FIFOs and devices from being opened
            return FileNotFoundError(str(audio))
        seconds = probe(audio).duration_s
        if seconds is None:
            return ValueError(f"{audio}: no duration in the header")
        return seconds if math.isfinite(seconds) and seconds >= 0 else ValueError(f"header length {seconds}")
    except Exception as exc:  # any decoder failure means "unreadable"; it is reported, not raised
        return exc


def check_manifests(paths: list[str | os.PathLike], data_root: str | os.PathLike,
                    duration_tolerance: float = 0.5, *, allow_outside_root: bool = False) -> CheckReport:
    """Check every entry of every manifest; audio resolves as ``data_root/split_path/name`` and is
    only opened inside ``data_root`` unless ``allow_outside_root``."""
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
            if not all(isinstance(v, str) for v in header.values()):
                report.problems.append(Problem("malformed_entry", where, key,
                                               "'split', 'split_path' and 'flamingo_task' must be strings"))
                continue
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
            try:
                audio = item.resolve_audio(data_root, allow_outside_root=allow_outside_root)
            except ManifestError as exc:
                kind = "outside_root" if "outside the data root" in str(exc) else "malformed_entry"
                report.problems.append(Problem(kind, where, key, str(exc).split(": ", 1)[-1]))
                continue
            if audio not in durations:
                durations[audio] = _probe(audio)
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
