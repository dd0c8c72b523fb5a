"""Multiple-choice scoring.

``mmau_string_match`` reproduces the official MMAU rule (Sakshi113/MMAU ``evaluation.py``), which
MMAR's ``code/evaluation.py`` copies unchanged:

1. Tokenise = lower-case, then the set of ``\\b\\w+\\b`` matches (Unicode word characters: letters,
   digits and the underscore; punctuation splits words, so "men's" gives {"men", "s"}).
2. An empty prediction (no tokens) is wrong.
3. Wrong-choice tokens = for every choice whose token *set* differs from the answer's, its tokens
   minus the answer's tokens (so words shared with the answer never count against it, and a choice
   that repeats the answer's words in another order is ignored).
4. Correct iff every answer token is in the prediction AND no wrong-choice token is.

Consequences that the official rule has and we keep: "(a) man" is wrong when a wrong choice
contains the word "a"; word order and repetition are ignored; extra words that appear in no choice
are allowed. Option letters are *not* understood: "B" alone is wrong unless "b" is a word of the
answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\b\w+\b")
# "(b)", "(b) violin", "b.", "b) violin", "b: violin" or a lone "b"; not "a dog" (an article).
_LETTER = re.compile(r"^\s*(?:\(([a-j])\)|([a-j])(?:[.):]|\s*$))", re.IGNORECASE)


def _tokens(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def mmau_string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """The official MMAU/MMAR matching rule (see the module docstring)."""
    prediction_tokens = _tokens(prediction)
    answer_tokens = _tokens(answer)
    if not prediction_tokens:
        return False
    wrong_tokens: set[str] = set()
    for choice in choices:
        choice_tokens = _tokens(choice)
        if choice_tokens != answer_tokens:
            wrong_tokens |= choice_tokens - answer_tokens
    return answer_tokens <= prediction_tokens and prediction_tokens.isdisjoint(wrong_tokens)


def _names_an_option(prediction: str, choices: Sequence[str]) -> bool:
    """Whether the prediction starts with some option's own text (as whole words): "D" when "D" is
    an option (a chord, a note), "B:maj7/1 chord" when "B:maj7/1" is one."""
    text = prediction.strip().lower()
    for c in choices:
        c = c.strip().lower()
        if c and text.startswith(c) and not re.match(r"\w", text[len(c):len(c) + 1]):
            return True
    return False


def letter_or_text_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """For benchmarks whose prompt lists lettered options (MuChoMusic, ...).

    An answer that starts with an option's own text is judged as text (so "D" or "B:maj7/1" is
    never read as a letter when it is itself an option). Otherwise a prediction that starts with
    an option letter ("B", "(b)", "b. violin") is judged by that letter; otherwise the official
    MMAU string rule decides. This is this project's rule, not an official one; it is named in
    every report that uses it.
    """
    found = None if _names_an_option(prediction, choices) else _LETTER.match(prediction)
    if found:
        index = ord((found.group(1) or found.group(2)).lower()) - ord("a")
        if index < len(choices):
            return choices[index].strip().lower() == answer.strip().lower()
    return mmau_string_match(answer, prediction, choices)
