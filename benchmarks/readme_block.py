"""Rewrite the part of README.md between two marker comments (the benchmarks' ``--readme`` modes)."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def rewrite_block(start: str, end: str, body: str, readme: Path = README) -> None:
    """Replace what stands between the ``start`` and ``end`` markers of ``readme`` with ``body``."""
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} ... {end} markers to replace between")
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1])
