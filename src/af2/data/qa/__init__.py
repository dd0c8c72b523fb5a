"""Metadata -> question/answer pairs, AudioSkills-style (spec 7.1).

Two back ends produce the same ``QAPair`` records: ``templates`` (deterministic, no LLM) and
``llm`` (an OpenAI-compatible chat-completions server). Every pair records its provenance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

SKILLS = ("temporal_reasoning", "attribute_identification", "counting", "contextual_sound_event_reasoning",
          "contextual_speech_event_reasoning", "information_extraction", "general_reasoning")


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    skill: str  # one of SKILLS, or a LongAudio category
    generator: str  # "templates" | "llm:<model>" | "longaudio"
    template: str  # template id or prompt id
    sources: tuple[str, ...]  # ids of the clips / recordings it was made from
    options: tuple[str, ...] = ()  # multiple-choice options when already written into the question
    extra: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"generator": self.generator, "template": self.template, "sources": list(self.sources)}


def item_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator that depends only on the seed and the item, never on processing order."""
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


LETTERS = "ABCDEFGH"
_LEADING = ("it sounds like ", "it is ", "about ", "in ", "the ", "an ", "a ")


def normalise_option(text: str) -> str:
    """An option's bare content: lower case, no quotes, end punctuation or leading prefix/article.

    Two options that normalise alike are the same answer in different words ("In a park." / "a park");
    the multiple-choice builder never offers both, and ``af2 data check`` reports them.
    """
    t = " ".join(text.lower().replace('"', " ").split()).strip(" .,;:!?")
    changed = True
    while changed:
        changed = False
        for prefix in _LEADING:
            if t.startswith(prefix) and len(t) > len(prefix):
                t, changed = t[len(prefix):].lstrip(), True
    return t


def number_options(value: int, rng: np.random.Generator, fmt: Callable[[int], str] = str, low: int = 1,
                   n_options: int = 4) -> list[str]:
    """Distractors for a count: a run of ``n_options`` consecutive numbers holding ``value`` at a random place,
    so the answer is not given away by being the middle (or any fixed rank) of the run."""
    offset = int(rng.integers(0, min(n_options, value - low + 1)))
    start = value - offset
    return [fmt(k) for k in range(start, start + n_options) if k != value]


def multiple_choice(qa: QAPair, distractors: Sequence[str], rng: np.random.Generator, n_options: int = 4,
                    answer_option: str | None = None) -> QAPair | None:
    """The AF2 multiple-choice form: ``Question? (A) x. (B) y. ...``; the answer names the letter and text.

    ``answer_option`` is the correct option in the distractors' surface form when the open answer is worded
    differently (default: the open answer itself). Distractors equal to the answer after
    ``normalise_option``, or to each other, are dropped; the answer's position is uniform over the options.
    Returns None when no distinct distractor exists.
    """
    answer = answer_option if answer_option is not None else qa.answer
    taken = {normalise_option(answer)}
    pool = []
    for d in sorted(set(distractors)):
        key = normalise_option(d)
        if d and key not in taken:
            taken.add(key)
            pool.append(d)
    if not pool:
        return None
    options = [pool[int(i)] for i in rng.permutation(len(pool))[: n_options - 1]]
    position = int(rng.integers(len(options) + 1))
    options.insert(position, answer)
    listed = " ".join(f"({LETTERS[i]}) {_sentence(o)}" for i, o in enumerate(options))
    return QAPair(question=f"{qa.question} {listed}", answer=f"({LETTERS[position]}) {answer}", skill=qa.skill,
                  generator=qa.generator, template=f"{qa.template}:mcq", sources=qa.sources,
                  options=tuple(options), extra={**qa.extra, "options": list(options), "answer_index": position})


def _sentence(option: str) -> str:
    return option if option.endswith((".", "?", "!")) else option + "."
