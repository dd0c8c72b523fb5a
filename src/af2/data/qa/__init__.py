"""Metadata -> question/answer pairs, AudioSkills-style (spec 7.1).

Two back ends produce the same ``QAPair`` records: ``templates`` (deterministic, no LLM) and
``llm`` (an OpenAI-compatible chat-completions server). Every pair records its provenance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

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


def multiple_choice(qa: QAPair, distractors: Sequence[str], rng: np.random.Generator, n_options: int = 4) -> QAPair | None:
    """The AF2 multiple-choice form: ``Question? (A) x. (B) y. ...``; the answer names the letter and text.

    Returns None when fewer than one distinct distractor exists.
    """
    pool = sorted({d for d in distractors if d and d.lower() != qa.answer.lower()})
    if not pool:
        return None
    picks = [pool[int(i)] for i in rng.permutation(len(pool))[: n_options - 1]]
    options = picks + [qa.answer]
    options = [options[int(i)] for i in rng.permutation(len(options))]
    letter = LETTERS[options.index(qa.answer)]
    listed = " ".join(f"({LETTERS[i]}) {_sentence(o)}" for i, o in enumerate(options))
    return QAPair(question=f"{qa.question} {listed}", answer=f"({letter}) {qa.answer}", skill=qa.skill,
                  generator=qa.generator, template=f"{qa.template}:mcq", sources=qa.sources,
                  options=tuple(options), extra=qa.extra)


def _sentence(option: str) -> str:
    return option if option.endswith((".", "?", "!")) else option + "."
