"""The AF2 manifest format (spec 6.4) and a JSONL equivalent.

JSON (official): one file per dataset split, ``<root>/<Name-Task>/<split>.json``::

    {"split": "train", "split_path": "audio/clips", "flamingo_task": "X-AudioCaptioning",
     "total_num": 2, "data": {"0": {"name": "a.flac", "prompt": ..., "output": ..., "duration": 3.1,
                                    "audio_start": 0.0, "id": ..., <extra fields>}, "1": {...}}}

The audio of an entry is ``<data_root>/<split_path>/<name>``. Keys of ``data`` are "0".."N-1".
Fields other than the official ones (``id``, provenance, skill, timeline reference...) are kept
in ``ManifestItem.extra`` and written back unchanged, so the official loader simply ignores them.

JSONL: one entry per line, the same entry fields plus ``split``, ``split_path`` and
``flamingo_task`` on every line, so each line stands alone. An item's ``id`` is required in
JSONL; in JSON it defaults to ``<flamingo_task>/<split>/<key>``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from af2.errors import ManifestError  # noqa: F401  (re-exported: raised here, defined in af2.errors)
from af2.jsonl import atomic_write_text, read_json, read_jsonl

_ENTRY_FIELDS = ("id", "name", "prompt", "output", "duration", "audio_start")
_SPLIT_FIELDS = ("split", "split_path", "flamingo_task")


@dataclass(frozen=True)
class ManifestItem:
    """One audio/prompt/answer entry. ``extra`` holds generator fields (provenance, skill, ...)."""

    id: str
    name: str  # audio path relative to <data_root>/<split_path>
    prompt: str
    output: str
    duration: float
    audio_start: float = 0.0
    split: str = "train"
    split_path: str = ""
    flamingo_task: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def audio_path(self, data_root: str | os.PathLike) -> Path:
        """Where the loader opens the audio: ``data_root / split_path / name``."""
        return Path(data_root) / self.split_path / self.name

    def resolve_audio(self, data_root: str | os.PathLike, *, allow_outside_root: bool = False) -> Path:
        """``audio_path`` with symlinks and ``..`` resolved; a path that leaves ``data_root`` (an
        absolute name or split_path, ``../``, a symlink pointing out) is a ManifestError unless
        ``allow_outside_root``."""
        root = Path(data_root).resolve()
        try:
            path = (root / self.split_path / self.name).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte, a name the OS refuses
            raise ManifestError(f"item {self.id!r}: audio path {self.split_path}/{self.name} cannot be resolved "
                                f"({exc})") from None
        if not allow_outside_root and not path.is_relative_to(root):
            raise ManifestError(f"item {self.id!r}: audio {self.split_path!r}/{self.name!r} resolves to {path}, "
                                f"outside the data root {root}; fix the entry or pass --allow-outside-root")
        return path

    def entry(self) -> dict[str, Any]:
        """The ``data`` entry as written: official fields first, then extras sorted by key."""
        out: dict[str, Any] = {"id": self.id, "name": self.name, "prompt": self.prompt,
                               "output": self.output, "duration": self.duration,
                               "audio_start": self.audio_start}
        for key in sorted(self.extra):
            if key in out or key in _SPLIT_FIELDS:
                raise ManifestError(f"item {self.id!r}: extra field {key!r} shadows a manifest field")
            out[key] = self.extra[key]
        return out


@dataclass(frozen=True)
class Manifest:
    """One dataset split: its header and its items, in file order."""

    path: Path
    split: str
    split_path: str
    flamingo_task: str
    items: list[ManifestItem]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int with hundreds of digits
        return False


def _item_from_entry(entry: Any, where: str, *, split: str, split_path: str, task: str,
                     default_id: str | None) -> ManifestItem:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: entry is {type(entry).__name__}, expected an object")
    for key in ("name", "prompt", "output", "duration"):
        if key not in entry:
            raise ManifestError(f"{where}: missing field {key!r}")
    if not isinstance(entry["name"], str):
        raise ManifestError(f"{where}: field 'name' must be a string (lists/interleaved entries are not supported)")
    for key in ("prompt", "output"):
        if not isinstance(entry[key], str):
            raise ManifestError(f"{where}: field {key!r} must be a string, got {type(entry[key]).__name__}")
    for key in ("duration", "audio_start"):
        value = entry.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise ManifestError(f"{where}: field {key!r} must be a finite number of seconds, got {str(value)[:40]}")
    item_id = entry.get("id", default_id)
    if not isinstance(item_id, str) or not item_id:
        raise ManifestError(f"{where}: field 'id' must be a non-empty string")
    extra = {k: v for k, v in entry.items() if k not in _ENTRY_FIELDS and k not in _SPLIT_FIELDS}
    return ManifestItem(id=item_id, name=entry["name"], prompt=entry["prompt"], output=entry["output"],
                        duration=float(entry["duration"]), audio_start=float(entry.get("audio_start", 0.0)),
                        split=split, split_path=split_path, flamingo_task=task, extra=extra)


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest: ``.json`` in the official format, ``.jsonl`` one item per line."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    doc = read_json(path, ManifestError)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise ManifestError(f"{path}: expected an object with a 'data' object (AF2 manifest format, spec 6.4)")
    split = str(doc.get("split", path.stem))
    split_path = doc.get("split_path", "")
    task = doc.get("flamingo_task", path.parent.name)
    if not isinstance(split_path, str) or not isinstance(task, str):
        raise ManifestError(f"{path}: 'split_path' and 'flamingo_task' must be strings")
    data = doc["data"]
    expected = [str(i) for i in range(len(data))]
    if sorted(data, key=lambda k: (len(k), k)) != expected:
        raise ManifestError(f"{path}: keys of 'data' must be \"0\"..\"{len(data) - 1}\"")
    if "total_num" in doc and doc["total_num"] != len(data):
        raise ManifestError(f"{path}: total_num is {doc['total_num']} but 'data' has {len(data)} entries")
    items = [_item_from_entry(data[k], f"{path}: entry {k}", split=split, split_path=split_path, task=task,
                              default_id=f"{task}/{split}/{k}") for k in expected]
    return Manifest(path=path, split=split, split_path=split_path, flamingo_task=task, items=items)


def _read_jsonl(path: Path) -> Manifest:
    items = []
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    for lineno, entry in read_jsonl(path, error=ManifestError).records:
        where = f"{path}: line {lineno}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected an object")
        if "id" not in entry:
            raise ManifestError(f"{where}: missing field 'id' (required in JSONL manifests)")
        header = {k: entry.get(k, d) for k, d in (("split", path.stem), ("split_path", ""),
                                                    ("flamingo_task", path.parent.name))}
        if not all(isinstance(v, str) for v in header.values()):
            raise ManifestError(f"{where}: 'split', 'split_path' and 'flamingo_task' must be strings")
        items.append(_item_from_entry(entry, where, split=header["split"], split_path=header["split_path"],
                                      task=header["flamingo_task"], default_id=None))
    first = items[0] if items else None
    return Manifest(path=path, split=first.split if first else path.stem,
                    split_path=first.split_path if first else "",
                    flamingo_task=first.flamingo_task if first else path.parent.name, items=items)


def write_manifest(path: str | os.PathLike, items: Iterable[ManifestItem], *, split: str, split_path: str,
                   flamingo_task: str) -> Path:
    """Write items as an official AF2 JSON manifest (or JSONL when ``path`` ends in ``.jsonl``).

    Output is byte-deterministic: fixed key order, no whitespace variation, UTF-8.
    """
    path = Path(path)
    items = list(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        lines = []
        for item in items:
            header = {"split": split, "split_path": split_path, "flamingo_task": flamingo_task}
            lines.append(_dumps({**item.entry(), **header}))
        return atomic_write_text(path, "".join(line + "\n" for line in lines))
    body = ",\n".join(f"{_dumps(str(i))}:{_dumps(item.entry())}" for i, item in enumerate(items))
    head = _dumps({"split": split, "split_path": split_path, "flamingo_task": flamingo_task,
                   "total_num": len(items)})[:-1]
    return atomic_write_text(path, f"{head},\"data\":{{\n{body}\n}}}}\n")
