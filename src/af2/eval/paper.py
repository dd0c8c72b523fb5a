"""Audio Flamingo 2's published results, to print beside ours with the difference.

Every number is copied from a table of the AF2 paper (Ghosh et al., "Audio Flamingo 2",
arXiv 2503.03983v1) unless its ``source`` says otherwise, with the benchmark revision/split as the
paper states it. All are for AF2-3B (Qwen2.5-3B): the paper gives no per-benchmark numbers for the
released 0.5B and 1.5B checkpoints (its Figure 7 shows LLM sizes only as a plot), so those sizes
have no rows. Benchmarks the paper reports that no task here loads (OpenAQA, MusicQA, CochlScene,
...) are left out. A caveat says where the paper's protocol differs from ours or is not public.
"""

from __future__ import annotations

import dataclasses
from typing import Any

PAPER = "AF2 paper (arXiv 2503.03983v1)"
_CLAP_RETRIEVAL = ("the paper scores classification by similarity retrieval with its AF-CLAP text encoder "
                   "(Deshmukh et al. 2023); ours picks the label nearest the answer by MiniLM text embedding")


@dataclasses.dataclass(frozen=True)
class PaperResult:
    task: str  # our task name
    benchmark: str  # as the paper names it
    metric: str  # our metric, on its scale (accuracy in %, CIDEr-D raw, judge x10)
    value: float
    source: str
    revision: str  # benchmark revision / split as the source states it
    scope: tuple[str, ...] = ()  # (): overall; ("category", c); ("facet", f, v); ("category-mean", c1, c2, ...)
    caveat: str = ""
    model: str = "AF2-3B"


PAPER_RESULTS: tuple[PaperResult, ...] = (
    PaperResult("mmau-test-mini", "MMAU Sound", "accuracy", 65.1, f"{PAPER} Table 2", "split not stated",
                ("category", "sound"), "the paper does not say which MMAU split or revision (test-mini or test)"),
    PaperResult("mmau-test-mini", "MMAU Music", "accuracy", 72.9, f"{PAPER} Table 2", "split not stated",
                ("category", "music"), "the paper does not say which MMAU split or revision (test-mini or test)"),
    PaperResult("mmau-test-mini", "MMAU (avg of sound and music)", "accuracy", 69.0, f"{PAPER} Table 3",
                "split not stated", ("category-mean", "sound", "music"),
                "ours is the mean of our sound and music accuracies; the paper's split is not stated"),
    PaperResult("audio-entailment", "AE Clotho", "accuracy", 92.5, f"{PAPER} Table 2", "Clotho entailment test",
                ("category", "clotho"), "the paper's prompt and answer matching for Audio Entailment are not public"),
    PaperResult("audio-entailment", "AE AudioCaps", "accuracy", 93.3, f"{PAPER} Table 2", "AudioCaps entailment test",
                ("category", "audiocaps"),
                "the paper's prompt and answer matching for Audio Entailment are not public"),
    PaperResult("compa-r", "CompA-R-test", "judge", 96.4, f"{PAPER} Table 2", "CompA-R-test (GAMA)", (),
                "reported as %; the paper's judge model and prompt for CompA-R-test are not public, so the x10 "
                "judge scales are comparable only in form"),
    PaperResult("muchomusic", "MuchoMusic", "accuracy", 56.5, f"{PAPER} Table 2", "MuChoMusic (all 1,187 items)", (),
                "the paper's answer matching is not public; ours is the letter-or-text rule"),
    PaperResult("longaudiobench", "LongAudioBench", "judge", 64.2, f"{PAPER} Table 2", "LongAudioBench (unreleased)",
                (), "LongAudioBench is not released, so our task is a look-alike built from other data; the paper's "
                "judge is GPT-4o with its own prompt (1-10, reported x10); not comparable"),
    PaperResult("clotho-aqa", "ClothoAQA (unanimous)", "accuracy", 86.9, f"{PAPER} Table 1",
                "Clotho-AQA test, unanimous answers", ("facet", "agreement", "unanimous"),
                "the paper's answer matching is not public; ours is normalised exact match"),
    PaperResult("clotho-aqa", "ClothoAQA (non-binary)", "accuracy", 52.6, f"{PAPER} Table 1",
                "Clotho-AQA test, non-yes/no questions", ("category", "open"),
                "the paper's answer matching is not public; ours is normalised exact match against the majority"),
    PaperResult("clotho-captioning", "Clotho-v2", "cider_d", 0.46, f"{PAPER} Table 1", "Clotho v2 evaluation", (),
                "the paper does not state its caption tokenizer; ours is named in the card"),
    PaperResult("audiocaps-captioning", "AudioCaps (zero-shot)", "cider_d", 0.58, f"{PAPER} Table 1",
                "AudioCaps test", (), "zero-shot in the paper (AudioCaps held out of training); the tokenizer is "
                "not stated"),
    PaperResult("gtzan", "GTZAN (zero-shot)", "accuracy", 69.1, f"{PAPER} Table 1", "GTZAN, all clips", (),
                _CLAP_RETRIEVAL),
    PaperResult("esc50", "ESC50 (zero-shot)", "accuracy", 83.9, f"{PAPER} Table 1", "ESC-50, all folds", (),
                _CLAP_RETRIEVAL),
    PaperResult("nsynth", "NSynth instrument", "accuracy", 71.1, f"{PAPER} Table 1", "NSynth test", (),
                _CLAP_RETRIEVAL + "; the paper does not say whether 'instrument' is the 11 families"),
    PaperResult("mmar", "MMAR", "accuracy", 21.9, "MMAR authors' benchmark table (ddlBoJack/MMAR @ 3bce090), "
                "not the AF2 paper", "MMAR-meta (1,000 items)", (),
                "measured by the MMAR authors with their own prompt, not by NVIDIA"),
)


def _ours(result: dict[str, Any], p: PaperResult) -> tuple[float | None, list[float] | None]:
    """Our value (and interval) of ``p``'s metric over ``p``'s scope, or None when not in this run."""
    kind = p.scope[0] if p.scope else ""
    if kind == "":
        row = result["metrics"]
    elif kind == "category":
        row = result["by_category"].get(p.scope[1], {})
    elif kind == "facet":
        row = result["by_facet"].get(p.scope[1], {}).get(p.scope[2], {})
    else:  # category-mean: no interval for a mean of two estimates
        values = [result["by_category"].get(c, {}).get(p.metric) for c in p.scope[1:]]
        ok = all(isinstance(v, float) for v in values)
        return (sum(values) / len(values) if ok else None), None
    value = row.get(p.metric)
    return (value if isinstance(value, float) else None), row.get("ci95", {}).get(p.metric)


def beside_ours(task: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's numbers for ``task`` with ours and the difference (ours - paper)."""
    rows = []
    for p in PAPER_RESULTS:
        if p.task != task:
            continue
        ours, ci = _ours(result, p)
        rows.append({"benchmark": p.benchmark, "model": p.model, "metric": p.metric, "paper": p.value,
                     "ours": ours, "ours_ci95": ci, "difference": None if ours is None else ours - p.value,
                     "source": p.source, "revision": p.revision, "caveat": p.caveat})
    return rows
