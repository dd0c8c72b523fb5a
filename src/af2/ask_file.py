"""Answering a JSONL file of requests (``af2 ask --input``): check the requests, skip the ids the
output already answers, answer the rest in batches and append one record per request.

A rerun resumes: the output keeps one record per id (the latest), so a request that failed before
is retried and its old error record replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from af2.errors import AF2Error, RequestError
from af2.jsonl import append_jsonl, compact, read_jsonl, record_id


def answer_record(answer) -> dict:
    return {"answer": answer.text, "finish_reason": answer.finish_reason, "duration_s": answer.audio.duration_s,
            "kept_s": answer.audio.kept_s, "truncated_s": answer.audio.truncated_s, "windows": answer.audio.windows,
            "first_token_s": round(answer.timings.first_token_s, 4), "new_tokens": answer.timings.new_tokens}


# Fields an answer record writes; a request's own fields of these names are not copied into it.
_ANSWER_FIELDS = ("answer", "finish_reason", "duration_s", "kept_s", "truncated_s", "windows", "first_token_s",
                  "new_tokens", "error")


def read_requests(path: Path) -> list[dict]:
    """The requests of a JSONL file, each checked; errors name ``file:line`` and the field."""
    if path.is_dir():
        raise RequestError(f"{path}: is a folder; --input takes a JSONL file")
    if not path.is_file():
        raise RequestError(f"{path}: no such request file")
    requests, seen = [], set()
    for n, item in read_jsonl(path, error=RequestError).records:
        where = f"{path}:{n}"
        if not isinstance(item, dict):
            raise RequestError(f"{where}: expected an object with 'audio' and 'question', got {type(item).__name__}")
        for key in ("audio", "question"):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                got = "missing" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"
                raise RequestError(f"{where}: '{key}' must be a non-empty string, got {got}")
        item.setdefault("id", f"line-{n}")
        rid = record_id(item)
        if rid is None or not rid.strip():
            raise RequestError(f"{where}: 'id' must be a non-empty string or an integer, got "
                               f"{type(item['id']).__name__} {json.dumps(item['id'])[:40]}")
        if rid in seen:
            raise RequestError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        audio = Path(item["audio"])
        request = {k: v for k, v in item.items() if k not in _ANSWER_FIELDS}
        request.update(id=rid, audio=str(audio if audio.is_absolute() else path.parent / audio))
        requests.append(request)
    return requests


def open_output(path: Path) -> int:
    """Make the output file valid JSONL with one record per id (the latest); fail early if unwritable."""
    if path.is_dir():
        raise RequestError(f"{path}: is a folder; --output takes a JSONL file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
        return compact(path)
    except OSError as exc:
        raise RequestError(f"{path}: cannot write the answers here ({exc.strerror or exc}); pick another --output")\
            from None


def precheck_audio(todo: list[dict], output: Path) -> tuple[int, list[dict]]:
    """Record requests whose audio file is missing, empty or a folder without loading the model;
    return (how many failed, the requests left)."""
    from af2.audio.decode import check_audio_path

    failed, left = [], []
    for r in todo:
        try:
            check_audio_path(r["audio"])
            left.append(r)
        except AF2Error as exc:
            failed.append({**r, "error": str(exc)})
    if failed:
        append_jsonl(output, failed)
        compact(output)
    return len(failed), left


def answer_requests(model, todo: list[dict], output: Path, options: dict[str, Any], batch_size: int,
                    on_batch: Callable[[int], None] = lambda n: None) -> int:
    """Answer ``todo`` in batches with ``model`` (an ``af2.AF2``), appending each batch's records to
    ``output``; ``on_batch(n)`` after each batch of n. Returns how many failed."""
    failures = 0
    for start in range(0, len(todo), max(1, batch_size)):
        chunk = todo[start:start + batch_size]
        try:
            answers = model.ask_batch([r["audio"] for r in chunk], [r["question"] for r in chunk], **options)
            records = [{**r, **answer_record(a)} for r, a in zip(chunk, answers)]
        except AF2Error:
            records = []  # one bad file must not sink its batch: answer its members one by one
            for r in chunk:
                try:
                    records.append({**r, **answer_record(model.ask(r["audio"], r["question"], **options))})
                except AF2Error as exc:
                    failures += 1
                    records.append({**r, "error": str(exc)})
        append_jsonl(output, records)
        on_batch(len(chunk))
    compact(output)  # a retried id that failed before keeps only its latest record
    return failures
