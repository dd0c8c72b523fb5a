"""Scorers: examples + predictions -> per-example scores, metrics and 95 % intervals.

Every scorer has a name, a version (in the reproducibility card) and a primary metric (the one
plotted). A metric value that is a string means "no number": it says why (a missing asset, a
judge that was not configured). Per-category tables come from the per-example scores, or, for
corpus metrics such as BLEU, from scoring each category's subset. A per-example score of None
(a judge reply that could not be read) is left out of every mean and counted instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from af2.errors import ConfigError
from af2.eval import captioning, choice, labels, stats
from af2.eval.judge import Judge
from af2.eval.registry import Example

Metrics = dict[str, Any]  # metric -> float, or a string saying why there is no number; "ci95" -> intervals


@dataclasses.dataclass(frozen=True)
class Scored:
    metrics: Metrics
    per_example: list[dict[str, float | None]]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. the judge's raw-score histogram


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
    caption_tokenizer: str = "auto"
    meteor: bool = True
    judge: Judge | None = None
    bootstrap_seed: int = stats.BOOTSTRAP_SEED
    bootstrap_resamples: int = stats.BOOTSTRAP_RESAMPLES


@dataclasses.dataclass(frozen=True)
class Scorer:
    name: str
    version: str
    primary: str
    corpus_level: bool  # True when a subset must be re-scored (BLEU, METEOR), not averaged
    fn: Callable[[Sequence[Example], Sequence[str], ScoringOptions], Scored]
    rule: str  # one line for the report

    def score(self, examples: Sequence[Example], predictions: Sequence[str], options: ScoringOptions) -> Scored:
        if len(examples) != len(predictions):
            raise ValueError(f"scorer {self.name}: {len(predictions)} predictions for {len(examples)} examples")
        return self.fn(examples, predictions, options)


@dataclasses.dataclass(frozen=True)
class PerExampleMetric:
    """How a per-example score becomes a reported metric: its mean times ``scale``."""

    key: str  # the per-example field
    metric: str  # the reported name
    scale: float
    proportion: bool  # 0/1 scores: Wilson interval; otherwise a bootstrap over items


PER_EXAMPLE_METRICS = (
    PerExampleMetric("correct", "accuracy", 100.0, True),
    PerExampleMetric("correct_exact", "accuracy_exact", 100.0, True),
    PerExampleMetric("similarity", "similarity", 100.0, False),
    PerExampleMetric("judge", "judge", 10.0, False),  # the 1-10 mean x 10, LongAudioBench's scale
    PerExampleMetric("judge", "judge_1_10", 1.0, False),
    PerExampleMetric("cider_d", "cider_d", 1.0, False),  # pycocoevalcap's corpus CIDEr-D is this mean
    PerExampleMetric("rouge_l", "rouge_l", 1.0, False),  # and so is its ROUGE-L
)


def _present(rows: Sequence[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None]


def averaged(rows: Sequence[dict]) -> dict[str, float]:
    """Every per-example metric present in ``rows``, as its scaled mean (items without a score skipped)."""
    out = {}
    for m in PER_EXAMPLE_METRICS:
        values = _present(rows, m.key)
        if rows and m.key in rows[0] and values:
            out[m.metric] = m.scale * sum(values) / len(values)
    return out


def intervals(rows: Sequence[dict], options: ScoringOptions) -> dict[str, list[float]]:
    """95 % intervals of every per-example metric in ``rows``, on the metric's scale."""
    out = {}
    for m in PER_EXAMPLE_METRICS:
        values = _present(rows, m.key)
        if not rows or m.key not in rows[0] or not values:
            continue
        if m.proportion:
            low, high = stats.wilson(int(round(sum(values))), len(values))
        else:
            low, high = stats.bootstrap_mean(values, options.bootstrap_resamples, options.bootstrap_seed)
        out[m.metric] = [m.scale * low, m.scale * high]
    return out


def _accuracy(flags: list[bool]) -> Scored:
    per: list[dict[str, float | None]] = [{"correct": float(f)} for f in flags]
    return Scored(averaged(per) if per else {"accuracy": 0.0}, per)


def _mmau(examples, predictions, options) -> Scored:
    return _accuracy([choice.mmau_string_match(str(e.reference), p, e.choices) for e, p in zip(examples, predictions)])


def _letter(examples, predictions, options) -> Scored:
    return _accuracy([choice.letter_or_text_match(str(e.reference), p, e.choices)
                      for e, p in zip(examples, predictions)])


def _label(examples, predictions, options) -> Scored:
    """Default: the label whose text embedding is nearest the answer; second column: exact words."""
    from af2.eval.similarity import nearest_labels

    label_set = sorted({str(e.reference) for e in examples} | {c for e in examples for c in e.choices})
    nearest = nearest_labels(predictions, {label: sorted(labels.surface_forms(label)) for label in label_set})
    per: list[dict[str, float | None]] = [
        {"correct": float(n is not None and labels.normalise(n) == labels.normalise(str(e.reference))),
         "correct_exact": float(labels.label_match(str(e.reference), p, label_set))}
        for e, p, n in zip(examples, predictions, nearest)]
    return Scored(averaged(per), per)


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
    per: list[dict[str, float | None]] = [{"correct": float(f), "similarity": s} for f, s in zip(flags, sims)]
    return Scored(averaged(per), per)


ALL_WRONG_NOTE = ("on the x10 scale the lowest possible score is 10, not 0: a model whose every answer "
                  "the judge rates 1 (wrong) scores 10")


def _open_judged(examples, predictions, options) -> Scored:
    """LLM judge (1-10 mean and x10) when an endpoint is configured; embedding similarity always."""
    from af2.eval.similarity import similarity_scores

    sims = similarity_scores(predictions, [e.reference for e in examples])
    per: list[dict[str, float | None]] = [{"similarity": s} for s in sims]
    if options.judge is None:
        metrics: Metrics = averaged(per)
        metrics["judge"] = "not computed: no judge endpoint (pass --judge-url and --judge-model)"
        return Scored(metrics, per)
    verdicts = [options.judge.verdict(e.question, str(e.reference), p) for e, p in zip(examples, predictions)]
    for row, v in zip(per, verdicts):
        row["judge"] = v.score
    metrics = averaged(per)
    failures = sum(1 for v in verdicts if v.score is None)
    if failures == len(verdicts):
        metrics["judge"] = metrics["judge_1_10"] = f"not computed: none of the {failures} judge replies had a score"
    metrics["judge_failures"] = float(failures)
    raw = Counter(_bucket(v.score) for v in verdicts)
    details = {"judge": {**options.judge.describe(), "failures": failures, "scored": len(verdicts) - failures,
                         "raw_score_histogram": {k: raw[k] for k in sorted(raw, key=_bucket_order)},
                         "note": ALL_WRONG_NOTE}}
    return Scored(metrics, per, details)


def _bucket(score: float | None) -> str:
    if score is None:
        return "unparseable"
    return str(int(score)) if float(score).is_integer() else f"{score:g}"


def _bucket_order(bucket: str) -> float:
    return float("inf") if bucket == "unparseable" else float(bucket)


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("mmau-string-match", "1", "accuracy", False, _mmau,
               "official MMAU/MMAR string match (all answer words present, no word of a wrong choice)"),
        Scorer("letter-or-text", "2", "accuracy", False, _letter,
               "an answer that is an option's text is judged as text; else a leading option letter decides; "
               "else the MMAU string match"),
        Scorer("label-accuracy", "2", "accuracy", False, _label,
               "accuracy: the label whose MiniLM text embedding is nearest the answer (best of its name and "
               "synonyms); accuracy_exact: the label or a synonym as whole words and no other class named"),
        Scorer("captioning", "2", "cider_d", True, _caption,
               "pycocoevalcap BLEU-1..4, ROUGE-L, CIDEr-D (+METEOR with Java); empty captions scored as given; "
               "SPICE/SPIDEr/FENSE unavailable"),
        Scorer("open-exact", "1", "accuracy", False, _open_exact,
               "normalised exact match against any reference; MiniLM cosine similarity x100"),
        Scorer("open-judged", "2", "judge", False, _open_judged,
               "LLM judge 1-10 (judge_prompt.txt): mean (judge_1_10) and mean x10 (judge); unreadable replies "
               "counted, not scored; MiniLM cosine similarity x100"),
    )
}


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}")
    return SCORERS[name]


def _numbers(metrics: Metrics) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and k != "judge_failures"}


def score_by_category(scorer: Scorer, examples: Sequence[Example], predictions: Sequence[str],
                      options: ScoringOptions, overall: Scored) -> dict[str, Metrics]:
    """Per-category metrics with intervals: averaged per-example scores, or a re-score of the subset."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.category, []).append(i)
    table: dict[str, Metrics] = {}
    for category, idx in sorted(groups.items()):
        if scorer.corpus_level and len(idx) == len(examples):
            metrics, rows = _numbers(overall.metrics), overall.per_example
        elif scorer.corpus_level:
            sub = scorer.score([examples[i] for i in idx], [predictions[i] for i in idx], options)
            metrics, rows = _numbers(sub.metrics), sub.per_example
        else:
            rows = [overall.per_example[i] for i in idx]
            metrics = averaged(rows)
        table[category] = {**metrics, "n": float(len(idx)), "ci95": intervals(rows, options)}
    return table
