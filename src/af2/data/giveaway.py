"""Text give-aways of multiple-choice items: can the answer be picked without listening?

``giveaway_report`` finds, per template, the ways an item's text betrays its answer:

    duplicate_option    a distractor equals the answer (or another option) after ``normalise_option``
    answer_in_question  the answer's text is in the question while some distractor's is not
    odd_format:<what>   the answer differs from every distractor, which all agree, in its lead words ("It sounds
                        like", "In"), first word, last word, end punctuation or capitalisation; a template is
                        flagged when its answers are the odd one out clearly more often than its distractors
                        are (a format shared by the pool is no clue)
    length:<longest|shortest>  the answer is the longest (shortest) option clearly more often than chance

``heuristic_baseline`` scores text-only pickers (longest, shortest, most word overlap with the question,
odd format, the answer most often correct for the template) against chance; after the template fixes all but
the prior should sit near chance, and the prior measures what a text-only model can learn from answer frequencies.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from af2.data.manifest import ManifestItem
from af2.data.qa import LETTERS, normalise_option

_OPTION = re.compile(r"\(([A-H])\) ")
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class MCItem:
    id: str
    template: str
    stem: str  # the question without its options
    options: tuple[str, ...]
    answer: int

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options)


def parse_mc(item: ManifestItem) -> MCItem | None:
    """The options and answer of a multiple-choice manifest item, or None for an open question.

    Options come from ``extra["options"]`` / ``extra["answer_index"]`` when the corpus wrote them, else from the
    ``(A) x. (B) y.`` list in the prompt and the letter at the start of the output."""
    prov = item.extra.get("provenance", {}) if isinstance(item.extra, dict) else {}
    template = str(prov.get("template", item.flamingo_task))
    marks = list(_OPTION.finditer(item.prompt))
    if len(marks) < 2 or [m.group(1) for m in marks] != list(LETTERS[: len(marks)]):
        return None
    stem = item.prompt[: marks[0].start()].strip()
    if isinstance(item.extra.get("options"), list) and isinstance(item.extra.get("answer_index"), int):
        options = tuple(str(o) for o in item.extra["options"])
        return MCItem(item.id, template, stem, options, item.extra["answer_index"])
    ends = [m.start() for m in marks[1:]] + [len(item.prompt)]
    options = tuple(item.prompt[m.end(): e].strip() for m, e in zip(marks, ends))
    letter = re.match(r"\s*\(?([A-H])\)", item.output)
    if letter is None or LETTERS.index(letter.group(1)) >= len(options):
        return None
    return MCItem(item.id, template, stem, options, LETTERS.index(letter.group(1)))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _lead(option: str) -> str:
    """Words before the option's content that ``normalise_option`` strips, articles aside ("it sounds like")."""
    words, core = _words(option), _words(normalise_option(option))
    lead = words[: len(words) - len(core)] if core and words[len(words) - len(core):] == core else []
    return " ".join(w for w in lead if w not in ("a", "an", "the"))


FORMAT_FEATURES: dict[str, Callable[[str], str]] = {
    "lead_words": _lead,
    "first_word": lambda o: (_words(o) or [""])[0],
    "last_word": lambda o: (_words(o) or [""])[-1],
    "punctuation": lambda o: o.rstrip()[-1:] if o.rstrip()[-1:] in ".?!\"')" else "",
    "capitalised": lambda o: str(o.lstrip("\"'(")[:1].isupper()),
}


def odd_one_out(options: Sequence[str], feature: Callable[[str], str]) -> int | None:
    """Index of the single option whose feature differs from all others, which agree; None if there is none."""
    values = [feature(o) for o in options]
    for i, v in enumerate(values):
        rest = values[:i] + values[i + 1:]
        if len(options) >= 3 and len(set(rest)) == 1 and rest[0] != v:
            return i
    return None


def _in_text(needle: str, text: str) -> bool:
    n = normalise_option(needle)
    return bool(n) and re.search(rf"\b{re.escape(n)}\b", text.lower()) is not None


def item_flags(mc: MCItem) -> list[str]:
    """Hard give-aways of one item (``duplicate_option``, ``answer_in_question``)."""
    flags = []
    keys = [normalise_option(o) for o in mc.options]
    if len(set(keys)) < len(keys):
        flags.append("duplicate_option")
    distractors = [o for i, o in enumerate(mc.options) if i != mc.answer]
    if _in_text(mc.options[mc.answer], mc.stem) and not all(_in_text(d, mc.stem) for d in distractors):
        flags.append("answer_in_question")
    return flags


@dataclass
class TemplateStats:
    items: int = 0
    chance: float = 0.0
    flags: Counter = field(default_factory=Counter)
    answer_odd: Counter = field(default_factory=Counter)  # feature -> items where the answer is the odd one out
    distractor_odd: Counter = field(default_factory=Counter)  # feature -> mean per distractor position
    longest: int = 0
    shortest: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def giveaways(self) -> dict[str, int]:
        """Give-away kind -> items affected (statistical kinds only when clearly above what chance gives)."""
        out = {k: n for k, n in self.flags.items() if n}
        for feat, n in self.answer_odd.items():
            d = self.distractor_odd[feat]  # what chance gives the answer too, with a margin for small counts
            if n >= 3 and n > 2 * d + 3 * math.sqrt(d + 1):
                out[f"odd_format:{feat}"] = n
        for kind, n in (("length:longest", self.longest), ("length:shortest", self.shortest)):
            if self.items >= 8 and n / self.items > self.chance + 0.25:
                out[kind] = n
        return out


def _note(stats: TemplateStats, kind: str, mc: MCItem, examples: int) -> None:
    if len(stats.examples[kind]) < examples:
        stats.examples[kind].append(f"{mc.id}: {mc.stem} {list(mc.options)} answer {LETTERS[mc.answer]}")


def giveaway_report(items: Iterable[ManifestItem], examples: int = 2) -> dict[str, TemplateStats]:
    """Per multiple-choice template: items, hard flags, odd-format and length statistics, examples."""
    stats: dict[str, TemplateStats] = defaultdict(TemplateStats)
    for item in items:
        mc = parse_mc(item)
        if mc is None:
            continue
        s = stats[mc.template]
        s.chance = (s.chance * s.items + mc.chance) / (s.items + 1)
        s.items += 1
        for flag in item_flags(mc):
            s.flags[flag] += 1
            _note(s, flag, mc, examples)
        n_dis = len(mc.options) - 1
        for feat, fn in FORMAT_FEATURES.items():
            odd = odd_one_out(mc.options, fn)
            if odd == mc.answer:
                s.answer_odd[feat] += 1
                _note(s, f"odd_format:{feat}", mc, examples)
            elif odd is not None:
                s.distractor_odd[feat] += 1 / n_dis
        lengths = [len(o) for o in mc.options]
        s.longest += lengths.count(max(lengths)) == 1 and lengths.index(max(lengths)) == mc.answer
        s.shortest += lengths.count(min(lengths)) == 1 and lengths.index(min(lengths)) == mc.answer
    return dict(sorted(stats.items()))


def format_report(stats: dict[str, TemplateStats], examples: int = 2) -> str:
    total = sum(s.items for s in stats.values())
    bad = {t: s.giveaways() for t, s in stats.items() if s.giveaways()}
    lines = [f"give-aways: {total} multiple-choice items in {len(stats)} templates; "
             f"{len(bad)} templates give the answer away in the text"]
    for template, kinds in bad.items():
        s = stats[template]
        lines.append(f"  {template} ({s.items} items): " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for kind in sorted(kinds):
            lines.extend(f"    e.g. {kind}: {e}" for e in s.examples.get(kind, [])[:examples])
    return "\n".join(lines)


# ---- text-only baseline ----------------------------------------------------------------------------

def _pick_length(mc: MCItem, longest: bool) -> int:
    lengths = [len(o) for o in mc.options]
    return lengths.index(max(lengths) if longest else min(lengths))


def _pick_overlap(mc: MCItem) -> int:
    q = set(_words(mc.stem))
    scores = [len(q & set(_words(o))) for o in mc.options]
    return scores.index(max(scores))


def _pick_odd(mc: MCItem) -> int:
    for fn in FORMAT_FEATURES.values():
        odd = odd_one_out(mc.options, fn)
        if odd is not None:
            return odd
    return _pick_length(mc, True)


HEURISTICS: dict[str, Callable[[MCItem], int]] = {
    "longest": lambda mc: _pick_length(mc, True), "shortest": lambda mc: _pick_length(mc, False),
    "question_overlap": _pick_overlap, "odd_format": _pick_odd,
}


def answer_prior(items: Iterable[MCItem]) -> dict[str, Counter]:
    """Template -> how often each (normalised) option text was the answer."""
    prior: dict[str, Counter] = defaultdict(Counter)
    for mc in items:
        prior[mc.template][normalise_option(mc.options[mc.answer])] += 1
    return prior


def heuristic_baseline(items: Sequence[MCItem], prior_items: Sequence[MCItem] = ()) -> dict[str, dict[str, float]]:
    """Accuracy of each text-only picker, overall, with the chance level of the same items.

    ``answer_prior``: pick the option that was most often correct for the template in ``prior_items`` (the
    training split), or without them in the other items (leave-one-out)."""
    prior = answer_prior(prior_items or items)
    own = not prior_items

    def pick_prior(mc: MCItem) -> int:
        counts = prior.get(mc.template, Counter())
        keys = [normalise_option(o) for o in mc.options]
        scores = [counts[k] - (own and i == mc.answer) for i, k in enumerate(keys)]
        return scores.index(max(scores))

    pickers = {**HEURISTICS, "answer_prior": pick_prior}
    n = max(1, len(items))
    out = {"chance": {"accuracy": sum(mc.chance for mc in items) / n, "items": float(len(items))}}
    for name, pick in pickers.items():
        out[name] = {"accuracy": sum(pick(mc) == mc.answer for mc in items) / n, "items": float(len(items))}
    return out


def balance_answers(items: Sequence[ManifestItem], slack: float = 1.0, open_pool: int = 40) -> list[ManifestItem]:
    """Drop multiple-choice items so that no answer of a template is correct more than ``slack`` times as often as
    its rarest answer (open items all stay); which items go is fixed by their ids.

    With ``slack=1`` (the held-out split) every answer of a template is equally often correct, so a text-only
    model's answer prior is worth chance there. Answers rarer than a tenth of the template's median count do not
    set the cap (one 8-event scene would otherwise cut every count to one item); held out they are dropped. Templates with more than ``open_pool`` distinct answers (sound labels,
    event descriptions, time spans) are left alone: there an answer is as frequent as the events it names, like its
    distractors, and capping frequent answers would make rare-looking (short) labels the answer more often."""
    groups: dict[str, dict[str, list[ManifestItem]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        mc = parse_mc(item)
        if mc is not None:
            groups[mc.template][normalise_option(mc.options[mc.answer])].append(item)
    drop: set[str] = set()
    for by_answer in groups.values():
        if len(by_answer) > open_pool:
            continue
        # answers under a tenth of the median count (a scene of 8 events) do not set the cap; held out (slack 1)
        # they are dropped, in train they stay
        sizes = sorted(len(v) for v in by_answer.values())
        floor = 0.1 * sizes[len(sizes) // 2]
        cap = max(1, int(slack * min(n for n in sizes if n >= floor)))
        for group in by_answer.values():
            ranked = sorted(group, key=lambda it: hashlib.sha256(it.id.encode()).hexdigest())
            drop.update(it.id for it in (ranked if slack <= 1 and len(ranked) < floor else ranked[cap:]))
    return [it for it in items if it.id not in drop]
