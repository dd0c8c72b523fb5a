"""Small readers shared by the benchmark loaders: JSON/JSONL/CSV files and audio paths, failing
loudly. Every metadata file read while ``recording()`` is active is noted, so the reproducibility
card can give its sha256."""

from __future__ import annotations

import contextlib
import contextvars
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from af2 import jsonl
from af2.errors import RequestError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
_READ: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("af2_eval_files_read", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[Path]]:
    """Collect the paths of the benchmark files read inside the ``with`` block."""
    files: list[Path] = []
    token = _READ.set(files)
    try:
        yield files
    finally:
        _READ.reset(token)


def note_read(path: Path) -> None:
    """Record a benchmark file read by other means (e.g. af2.data.manifest)."""
    files = _READ.get()
    if files is not None:
        files.append(path)


def find_file(root: Path, names: tuple[str, ...], task: str) -> Path:
    """The first of ``names`` (relative paths or glob patterns) that exists under ``root``."""
    for name in names:
        hits = sorted(root.glob(name))
        if hits:
            return hits[0]
    raise RequestError(f"task {task}: none of {list(names)} found under {root}")


def read_json(path: Path) -> Any:
    note_read(path)
    return jsonl.read_json(path, RequestError)


def read_jsonl(path: Path) -> list[Any]:
    """One JSON value per non-empty line; any unreadable line (the last one too) names ``file:line``."""
    note_read(path)
    found = jsonl.read_jsonl(path, error=RequestError)
    if found.torn:
        raise RequestError(f"{path}: its last line is not valid JSON; fix or remove it")
    return [value for _, value in found.records]


def read_records(path: Path) -> list[Any]:
    """A JSON list of items (``.json``) or one item per line (``.jsonl``)."""
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise RequestError(f"{path}: expected a JSON list of items")
    return data


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; column names are matched case-insensitively, spaces stripped."""
    note_read(path)
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = {(h or "").strip().lower(): h for h in reader.fieldnames or ()}
        missing = [c for c in required if c.lower() not in header]
        if missing:
            raise RequestError(f"{path}: missing column(s) {missing}; the header is {reader.fieldnames}")
        return [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def field(record: dict, keys: tuple[str, ...], where: str) -> Any:
    """The first of ``keys`` present in ``record``; a clear error naming them all otherwise."""
    for key in keys:
        if key in record and record[key] not in (None, ""):
            return record[key]
    raise RequestError(f"{where}: missing field {' or '.join(repr(k) for k in keys)}")


def label_text(value: Any) -> str:
    """A facet or category value as table text: a one-element list is its element, a longer list
    its elements joined with ' + ' (never the Python repr "['Reasoning']")."""
    if isinstance(value, (list, tuple)):
        return " + ".join(str(v) for v in value)
    return str(value)


def audio_path(root: Path, relative: str, where: str) -> str:
    path = (root / relative).resolve()
    if not path.is_file():
        raise RequestError(f"{where}: audio file {path} does not exist")
    return str(path)


def audio_by_stem(folder: Path, stems: tuple[str, ...], where: str) -> str:
    """The audio file in ``folder`` named one of ``stems`` with any common audio suffix."""
    for stem in stems:
        if Path(stem).suffix.lower() in AUDIO_SUFFIXES and (folder / stem).is_file():
            return str((folder / stem).resolve())
        for suffix in AUDIO_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return str((folder / f"{stem}{suffix}").resolve())
    raise RequestError(f"{where}: no audio file in {folder} named {list(stems)} (with any of {list(AUDIO_SUFFIXES)})")
