"""Classification accuracy for generative models: label normalisation and synonym lists.

An audio-language model answers in words, so "Hip-Hop music." must count for the GTZAN label
``hiphop`` and "a crying baby" for the ESC-50 label ``crying_baby``. The rule:

1. Normalise the prediction and every label: lower-case, ``_``/``-`` to spaces, punctuation
   removed, whitespace collapsed, a leading article (a, an, the) dropped.
2. Each class has surface forms: its normalised name plus the synonyms listed below.
3. Correct iff some surface form of the gold class occurs in the prediction as whole words, and no
   surface form of another class does (unless it is part of a gold surface form that matched, e.g.
   "hip hop" contains "hop"). Equality is the common case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")
_ARTICLE = re.compile(r"^(a|an|the) ")

# Normalised class name -> other ways to say it. Extend per benchmark; keys are normalised names.
SYNONYMS: dict[str, tuple[str, ...]] = {
    # GTZAN genres
    "hiphop": ("hip hop", "rap"),
    "classical": ("classical music", "orchestral"),
    "country": ("country music",),
    "disco": ("disco music",),
    "jazz": ("jazz music",),
    "metal": ("heavy metal",),
    "pop": ("pop music",),
    "reggae": ("reggae music",),
    "rock": ("rock music",),
    "blues": ("blues music",),
    # NSynth instrument families
    "keyboard": ("piano", "keys"),
    "guitar": ("guitars",),
    "mallet": ("marimba", "xylophone", "vibraphone"),
    "reed": ("saxophone", "clarinet"),
    "vocal": ("voice", "singing"),
    "synth lead": ("synthesizer", "synth"),
    "string": ("strings", "violin", "viola", "cello", "fiddle"),
    "brass": ("trumpet", "trombone", "tuba", "french horn"),
    "flute": ("flutes",),
    # ESC-50 (a few common paraphrases)
    "dog": ("dog barking", "barking"),
    "rooster": ("cock a doodle doo", "crowing"),
    "crying baby": ("baby crying",),
    "clock tick": ("ticking clock", "clock ticking"),
    "sneezing": ("sneeze",),
    "coughing": ("cough",),
    # Audio Entailment
    # Audio Entailment (its prompt says "true (entailment), possibly true (neutral) or false (contradiction)")
    "entailment": ("entailed", "entails", "yes", "true", "the statement is true"),
    "contradiction": ("contradicts", "contradicted", "no", "false", "the statement is false"),
    "neutral": ("maybe", "cannot be determined", "undetermined", "possibly true", "the statement is possibly true"),
}


def normalise(text: str) -> str:
    text = text.lower().replace("_", " ").replace("-", " ")
    text = _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()
    return _ARTICLE.sub("", text)


def surface_forms(label: str, synonyms: Mapping[str, Iterable[str]] = SYNONYMS) -> set[str]:
    name = normalise(label)
    forms = {name, name.replace(" ", "")}
    forms |= {normalise(s) for s in synonyms.get(name, ())}
    forms |= {normalise(s) for s in synonyms.get(name.replace(" ", ""), ())}
    return {f for f in forms if f}


def _occurs(form: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(form)}(?!\w)", text) is not None


def label_match(
    label: str,
    prediction: str,
    label_set: Iterable[str],
    synonyms: Mapping[str, Iterable[str]] = SYNONYMS,
) -> bool:
    """The rule in the module docstring. ``label_set`` is every class of the benchmark."""
    text = normalise(prediction)
    gold = surface_forms(label, synonyms)
    hits = [f for f in gold if _occurs(f, text)]
    if not hits:
        return False
    gold_name = normalise(label)
    for other in label_set:
        if normalise(other) == gold_name:
            continue
        for form in surface_forms(other, synonyms):
            if _occurs(form, text) and not any(_occurs(form, hit) for hit in hits):
                return False
    return True
