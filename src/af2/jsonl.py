"""JSON and JSONL files on disk: one reader, one appender, one atomic writer, one resume rule.

Used by ``af2 ask --input`` (requests and answers), the evaluation runner's prediction shards and
the data tools. Rules every caller gets:

* A line that cannot be read (not UTF-8, not JSON, nested too deeply, a number too long) is
  reported with ``file:line``; a *last* line without its newline that does not parse is a write cut
  off by a kill (a torn line) and is dropped, not an error.
* Appends are flushed and fsynced line by line, so a kill loses at most the line being written.
* Whole-file writes go to a temporary file in the same folder that then replaces the target
  (``os.replace``), so a reader sees the old file or the new one, never half of one.
* Resume: ``latest_records`` keeps one record per id, the last written; ``compact`` rewrites the
  file that way, so it stays valid JSONL with one line per id.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from af2.errors import AF2Error, RequestError


@dataclass
class JsonlFile:
    """What ``read_jsonl`` found: parsed values with their 1-based line numbers, and the rest."""

    path: Path
    records: list[tuple[int, Any]] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line, why) of unreadable lines
    torn: bool = False  # the last line was cut off mid-write and dropped
    good_bytes: int = 0  # bytes up to the end of the last complete, readable line


def parse_json(text: str | bytes, where: str, error: type[AF2Error] = RequestError) -> Any:
    """``json.loads`` that raises ``error`` naming ``where`` for anything unreadable: bad UTF-8,
    malformed JSON, nesting deep enough to exhaust the recursion limit, numbers with thousands of
    digits, NaN/Infinity (not JSON, though Python writes them)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{where}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON (malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg})")\
            from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to be an af2 file") from None
    except ValueError as exc:  # an int longer than sys.get_int_max_str_digits, NaN, Infinity
        raise error(f"{where}: unreadable JSON value ({str(exc).splitlines()[0][:120]})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | os.PathLike, error: type[AF2Error] = RequestError, max_bytes: int = 1 << 30) -> Any:
    """Parse a whole JSON file; every failure (missing, too big, unreadable) is an ``error``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {size:,} bytes, more than the {max_bytes:,} a JSON file here may have")
        data = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a JSON file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_json(data, str(path), error)


def read_jsonl(path: str | os.PathLike, *, strict: bool = True, error: type[AF2Error] = RequestError) -> JsonlFile:
    """Read every line of a JSONL file. Blank lines are skipped; a torn last line is dropped.

    strict: an unreadable line before the last raises ``error`` naming ``file:line``; with
    ``strict=False`` it is listed in ``bad_lines`` and reading goes on.
    """
    path = Path(path)
    out = JsonlFile(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    offset = 0
    lines = data.split(b"\n")
    for n, raw in enumerate(lines, 1):
        last = n == len(lines)
        end = offset + len(raw) + (0 if last else 1)
        if raw.strip():
            try:
                out.records.append((n, parse_json(raw, f"{path}:{n}", error)))
            except AF2Error as exc:
                if last:  # no newline after it: a write that was cut off
                    out.torn = True
                    break
                if strict:
                    raise
                out.bad_lines.append((n, str(exc)))
        if not out.torn:
            out.good_bytes = end
        offset = end
    return out


def dumps_line(record: Any, *, sort_keys: bool = False, allow_nan: bool = False) -> str:
    """One JSONL line (no newline); NaN/Infinity are refused (they are not JSON) unless ``allow_nan``."""
    return json.dumps(record, ensure_ascii=False, sort_keys=sort_keys, allow_nan=allow_nan)


def append_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Append records and make them durable (flush + fsync) before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(dumps_line(r) + "\n" for r in records)
    if path.exists() and path.stat().st_size:  # never glue a record onto a last line without newline
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


_UMASK = os.umask(0)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``, readable as a
    plainly created file would be (some writers, safetensors' among them, create their files 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")  # threads too
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) so that readers see the old file or the new one, never a part."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_jsonl(path: str | os.PathLike, records: Iterable[Any], **dump_options: bool) -> Path:
    """Replace ``path`` atomically with one line per record (``dump_options``: see ``dumps_line``)."""
    return atomic_write_text(path, "".join(dumps_line(r, **dump_options) + "\n" for r in records))


def record_id(record: Any, key: str = "id") -> str | None:
    """A record's id as a string, or None when it has none usable (not an object, a list id...)."""
    if not isinstance(record, dict):
        return None
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value)


def latest_records(path: str | os.PathLike, key: str = "id") -> tuple[dict[str, dict], int]:
    """``({id: last record written for it}, lines skipped)``: the resume view of an output file.
    Lines that are unreadable, not objects, or without a string/int id are skipped and counted."""
    return _latest(read_jsonl(path, strict=False), key)


def _latest(found: JsonlFile, key: str) -> tuple[dict[str, dict], int]:
    latest: dict[str, dict] = {}
    skipped = len(found.bad_lines)
    for _, record in found.records:
        rid = record_id(record, key)
        if rid is None:
            skipped += 1
            continue
        latest.pop(rid, None)  # re-insert so that file order follows the latest write
        latest[rid] = record
    return latest, skipped


def answered_ids(path: str | os.PathLike, done: Callable[[dict], bool] = lambda r: "error" not in r,
                 key: str = "id") -> set[str]:
    """Ids whose latest record in ``path`` counts as answered (by default: it has no 'error')."""
    latest, _ = latest_records(path, key)
    return {rid for rid, record in latest.items() if done(record)}


def compact(path: str | os.PathLike, key: str = "id") -> int:
    """Rewrite ``path`` atomically with one record per id (the latest), dropping unreadable lines;
    returns how many lines were dropped. A missing file stays missing."""
    path = Path(path)
    if not path.exists():
        return 0
    found = read_jsonl(path, strict=False)
    latest, _ = _latest(found, key)
    dropped = len(found.records) + len(found.bad_lines) + int(found.torn) - len(latest)
    if dropped:
        write_jsonl(path, latest.values())
    return dropped
