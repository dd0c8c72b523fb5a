"""AF-CLAP hard negatives derived from a caption (spec 2.4): captions that share the words of the
positive but describe different audio, so the audio tower must learn order, attributes and counts.

  temporal   "a dog barks then a car passes" → "a car passes then a dog barks"
  rebinding  "a loud dog and a quiet cat"    → "a quiet dog and a loud cat"
  attribute  "a loud dog"                    → "a quiet dog"
  count      "two beeps"                     → "three beeps"
"""

from __future__ import annotations

import re

_ORDER = re.compile(r"^(?P<a>.+?)\s*(?P<sep>,?\s+(?:and )?then\s+|\s+followed by\s+|\s+before\s+|\s+after\s+)"
                    r"(?P<b>.+?)(?P<end>[.!]?)$", re.IGNORECASE)
_OPPOSITES = {
    "loud": "quiet", "quiet": "loud", "soft": "loud", "high": "low", "low": "high", "fast": "slow",
    "slow": "fast", "long": "short", "short": "long", "male": "female", "female": "male", "near": "distant",
    "distant": "near", "rising": "falling", "falling": "rising", "increasing": "decreasing",
    "decreasing": "increasing", "bright": "dark", "dark": "bright", "deep": "shrill", "shrill": "deep",
}
_COUNTS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_TIMES = {"once": "twice", "twice": "once", "thrice": "twice"}
_WORD = re.compile(r"[a-z]+|\d+", re.IGNORECASE)


def _match_case(new: str, old: str) -> str:
    return new.capitalize() if old[:1].isupper() else new


def temporal_swap(caption: str) -> str | None:
    m = _ORDER.match(caption.strip())
    if m is None:
        return None
    a, b = m.group("a"), m.group("b")
    capital = a[:1].isupper()
    first = b[:1].upper() + b[1:] if capital else b
    second = a[:1].lower() + a[1:] if capital else a
    return f"{first}{m.group('sep')}{second}{m.group('end')}"


def _edit_words(caption: str, table) -> list[str]:
    out = []
    for m in _WORD.finditer(caption):
        new = table(m.group(0).lower())
        if new is not None:
            out.append(caption[:m.start()] + _match_case(new, m.group(0)) + caption[m.end():])
    return out


def _attribute(word: str) -> str | None:
    return _OPPOSITES.get(word)


def _count(word: str) -> str | None:
    if word.isdigit():
        return str(int(word) + 1)
    if word in _COUNTS:
        i = _COUNTS.index(word)
        return _COUNTS[i + 1] if i + 1 < len(_COUNTS) else _COUNTS[i - 1]
    return _TIMES.get(word)


def rebind(caption: str) -> str | None:
    """Swap the first two attribute words, re-binding each attribute to the other event."""
    hits = [m for m in _WORD.finditer(caption) if m.group(0).lower() in _OPPOSITES]
    if len(hits) < 2 or hits[0].group(0).lower() == hits[1].group(0).lower():
        return None
    a, b = hits[0], hits[1]
    return (caption[:a.start()] + _match_case(b.group(0).lower(), a.group(0)) + caption[a.end():b.start()]
            + _match_case(a.group(0).lower(), b.group(0)) + caption[b.end():])


def hard_negatives(caption: str, n: int) -> list[str]:
    """Up to ``n`` distinct negatives of ``caption``, strongest kinds first; fewer when the caption
    offers fewer edits (the loss masks the missing ones; nothing is invented)."""
    candidates = [temporal_swap(caption), rebind(caption), *_edit_words(caption, _attribute),
                  *_edit_words(caption, _count)]
    seen, out = {caption.strip().lower()}, []
    for c in candidates:
        if c is not None and c.strip().lower() not in seen:
            seen.add(c.strip().lower())
            out.append(c)
    return out[:n]
