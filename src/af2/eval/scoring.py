"""Scorers: examples + predictions -> per-example scores and metrics.

Every scorer has a name, a version (in the reproducibility card) and a primary metric (the one
plotted). A metric value that is a string means "no number": it says why (a missing asset, a
judge that was not configured). Per-category tables come from the per-example scores, or, for
corpus metrics such as CIDEr-D, from scoring each category's subset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from af2.errors import ConfigError
from af2.eval import captioning, choice, labels
from af2.eval.judge import Judge
from af2.eval.tasks import Example

Metrics = dict[str, float | str]


@dataclasses.dataclass(frozen=True)
class Scored:
    metrics: Metrics
    per_example: list[dict[str, float]]


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
    caption_tokenizer: str = "auto"
    meteor: bool = True
    judge: Judge | None = None


@dataclasses.dataclass(frozen=True)
class Scorer:
    name: str
    version: str
    primary: str
    corpus_level: bool  # True when a subset must be re-scored (CIDEr-D), not averaged
    fn: Callable[[Sequence[Example], Sequence[str], ScoringOptions], Scored]
    rule: str  # one line for the report

    def score(self, examples: Sequence[Example], predictions: Sequence[str], options: ScoringOptions) -> Scored:
        if len(examples) != len(predictions):
            raise ValueError(f"scorer {self.name}: {len(predictions)} predictions for {len(examples)} examples")
        return self.fn(examples, predictions, options)


def _accuracy(flags: list[bool]) -> Scored:
    per = [{"correct": float(f)} for f in flags]
    return Scored({"accuracy": 100.0 * sum(flags) / max(len(flags), 1)}, per)


def _mmau(examples, predictions, options) -> Scored:
    return _accuracy([choice.mmau_string_match(str(e.reference), p, e.choices) for e, p in zip(examples, predictions)])


def _letter(examples, predictions, options) -> Scored:
    return _accuracy([choice.letter_or_text_match(str(e.reference), p, e.choices) for e, p in zip(examples, predictions)])


def _label(examples, predictions, options) -> Scored:
    label_set = sorted({str(e.reference) for e in examples} | {c for e in examples for c in e.choices})
    return _accuracy([labels.label_match(str(e.reference), p, label_set) for e, p in zip(examples, predictions)])


def _caption(examples, predictions, options) -> Scored:
    refs = [[e.reference] if isinstance(e.reference, str) else list(e.reference) for e in examples]
    metrics, per = captioning.caption_metrics(predictions, refs, options.caption_tokenizer, options.meteor)
    return Scored(metrics, per)


def _open_exact(examples, predictions, options) -> Scored:
    """Normalised exact match against any reference, plus embedding similarity."""
    from af2.eval.similarity import similarity_scores

    refs = [[e.reference] if isinstance(e.reference, str) else list(e.reference) for e in examples]
    flags = [any(labels.normalise(p) == labels.normalise(r) for r in rs) for p, rs in zip(predictions, refs)]
    sims = similarity_scores(predictions, refs)
    per = [{"correct": float(f), "similarity": s} for f, s in zip(flags, sims)]
    metrics: Metrics = {"accuracy": 100.0 * sum(flags) / max(len(flags), 1),
                        "similarity": 100.0 * sum(sims) / max(len(sims), 1)}
    return Scored(metrics, per)


def _open_judged(examples, predictions, options) -> Scored:
    """LLM judge (mean 1-10 × 10) when an endpoint is configured; embedding similarity always."""
    from af2.eval.similarity import similarity_scores

    sims = similarity_scores(predictions, [e.reference for e in examples])
    per = [{"similarity": s} for s in sims]
    metrics: Metrics = {"similarity": 100.0 * sum(sims) / max(len(sims), 1)}
    if options.judge is None:
        metrics["judge"] = "not computed: no judge endpoint (pass --judge-url and --judge-model)"
        return Scored(metrics, per)
    for e, p, row in zip(examples, predictions, per):
        row["judge"] = float(options.judge.score(e.question, str(e.reference), p))
    metrics["judge"] = 10.0 * sum(r["judge"] for r in per) / max(len(per), 1)
    return Scored(metrics, per)


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("mmau-string-match", "1", "accuracy", False, _mmau,
               "official MMAU/MMAR string match (all answer words present, no word of a wrong choice)"),
        Scorer("letter-or-text", "1", "accuracy", False, _letter,
               "a leading option letter decides; otherwise the MMAU string match"),
        Scorer("label-accuracy", "1", "accuracy", False, _label,
               "normalised label or synonym present as whole words, no other class named"),
        Scorer("captioning", "1", "cider_d", True, _caption,
               "pycocoevalcap BLEU-1..4, ROUGE-L, CIDEr-D (+METEOR with Java); SPICE/SPIDEr/FENSE unavailable"),
        Scorer("open-exact", "1", "accuracy", False, _open_exact,
               "normalised exact match against any reference; MiniLM cosine similarity ×100"),
        Scorer("open-judged", "1", "judge", False, _open_judged,
               "LLM judge 1-10, mean ×10 (judge_prompt.txt); MiniLM cosine similarity ×100"),
    )
}


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}")
    return SCORERS[name]


# Per-example values -> the metric they average into (accuracy and similarity in %, judge 1-10 -> ×10).
_PER_EXAMPLE_SCALE = {"correct": 100.0, "similarity": 100.0, "judge": 10.0}
_PER_EXAMPLE_NAME = {"correct": "accuracy"}


def score_by_category(scorer: Scorer, examples: Sequence[Example], predictions: Sequence[str],
                      options: ScoringOptions, overall: Scored) -> dict[str, Metrics]:
    """Per-category metrics: averaged per-example scores, or a re-score of the subset."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.category, []).append(i)
    table: dict[str, Metrics] = {}
    for category, idx in sorted(groups.items()):
        if scorer.corpus_level and len(idx) == len(examples):
            table[category] = {k: v for k, v in overall.metrics.items() if isinstance(v, float)}
        elif scorer.corpus_level:
            sub = scorer.score([examples[i] for i in idx], [predictions[i] for i in idx], options)
            table[category] = {k: v for k, v in sub.metrics.items() if isinstance(v, float)}
        else:
            rows = [overall.per_example[i] for i in idx]
            table[category] = {
                _PER_EXAMPLE_NAME.get(k, k): _PER_EXAMPLE_SCALE.get(k, 1.0) * sum(r[k] for r in rows) / len(rows)
                for k in rows[0]
            }
        table[category]["n"] = float(len(idx))
    return table
