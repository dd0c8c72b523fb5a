"""Captioning metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D from ``pycocoevalcap`` (the COCO
caption toolkit that the DCASE and AudioCaps/Clotho papers use), run offline.

- BLEU, ROUGE-L and CIDEr-D are pure Python in pycocoevalcap. CIDEr-D's IDF is computed over the
  references of the evaluated set, so the score of a subset differs from its share of the whole.
- METEOR needs Java (``java`` on PATH) and runs the ``meteor-1.5.jar`` shipped in the wheel.
- Tokenisation: ``ptb`` runs the Stanford PTB tokenizer jar shipped in the wheel (Java; the
  official pipeline); ``simple`` is a pure-Python stand-in (lower-case, punctuation removed,
  whitespace split) that differs from PTB on contractions ("don't" stays one token). ``auto``
  picks ``ptb`` when Java is present. The report names the tokenizer used.
- An empty caption is scored as the empty string: no n-gram matches, so it adds 0 to CIDEr-D and
  ROUGE-L and counts only in BLEU's reference length (no ``<empty>`` placeholder word, which would
  count as a wrong unigram).
- SPICE, SPIDEr and FENSE are reported as unavailable with the reason, never as a number: SPICE
  downloads Stanford CoreNLP 3.6.0 on first use, SPIDEr needs SPICE, FENSE needs a Sentence-BERT
  model and an error-detector checkpoint that are not installed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from af2.errors import ConfigError

UNAVAILABLE = {
    "spice": "unavailable: SPICE needs Stanford CoreNLP 3.6.0 jars, which are not installed "
    "(pycocoevalcap downloads them on first use; this harness never downloads)",
    "spider": "unavailable: SPIDEr = (CIDEr-D + SPICE) / 2 and SPICE is unavailable",
    "fense": "unavailable: FENSE needs the paraphrase-TinyBERT-L6-v2 Sentence-BERT model and the "
    "FENSE error-detector checkpoint, which are not installed",
}
_PTB_PUNCTUATION = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_SIMPLE_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def java_available() -> bool:
    return shutil.which("java") is not None


def resolve_tokenizer(name: str) -> str:
    if name == "auto":
        return "ptb" if java_available() else "simple"
    if name not in ("ptb", "simple"):
        raise ConfigError(f"caption tokenizer must be auto, ptb or simple, not {name!r}")
    if name == "ptb" and not java_available():
        raise ConfigError("caption tokenizer 'ptb' needs Java on PATH (apt-get install default-jre-headless)")
    return name


def simple_tokenize(text: str) -> str:
    tokens = _SIMPLE_TOKEN.findall(text.lower())
    return " ".join(t for t in tokens if t not in _PTB_PUNCTUATION and re.search(r"\w", t))


def _tokenize(gts: dict[int, list[str]], res: dict[int, list[str]], tokenizer: str):
    # Empty captions bypass the tokenizer: the PTB jar reads one caption per line, and an empty
    # line must not shift the others.
    filled = {k: v for k, v in res.items() if any(s.strip() for s in v)}
    if tokenizer == "simple":
        tok = lambda d: {k: [simple_tokenize(s) for s in v] for k, v in d.items()}  # noqa: E731
        gts, filled = tok(gts), tok(filled)
    else:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        ptb = PTBTokenizer()
        wrap = lambda d: {k: [{"caption": s} for s in v] for k, v in d.items()}  # noqa: E731
        gts, filled = ptb.tokenize(wrap(gts)), (ptb.tokenize(wrap(filled)) if filled else {})
    return gts, {k: filled.get(k, [""]) for k in res}


def caption_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenizer: str = "auto",
    meteor: bool = True,
) -> tuple[dict[str, float | str], list[dict[str, float]]]:
    """Corpus metrics and per-example CIDEr-D/BLEU-4/ROUGE-L for ``predictions`` vs ``references``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"example {i} has no reference captions")
    tokenizer = resolve_tokenizer(tokenizer)
    gts = {i: list(refs) for i, refs in enumerate(references)}
    # An empty caption stays empty (no placeholder token), as pycocoevalcap and aac-metrics score it.
    res = {i: [p] for i, p in enumerate(predictions)}
    gts, res = _tokenize(gts, res, tokenizer)

    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    metrics: dict[str, float | str] = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
    metrics["rouge_l"] = float(rouge)
    metrics["cider_d"] = float(cider)
    if not meteor:
        metrics["meteor"] = "not computed: METEOR was switched off (--no-meteor)"
    elif java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        metrics["meteor"] = float(Meteor().compute_score(gts, res)[0])
    else:
        metrics["meteor"] = "unavailable: METEOR needs Java on PATH (apt-get install default-jre-headless)"
    metrics.update(UNAVAILABLE)
    metrics["tokenizer"] = tokenizer
    per_example = [
        {"cider_d": float(cider_each[i]), "bleu_4": float(bleu_each[3][i]), "rouge_l": float(rouge_each[i])}
        for i in range(len(predictions))
    ]
    return metrics, per_example
