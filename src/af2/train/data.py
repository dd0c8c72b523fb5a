"""Training batches from manifests: the blend (which items a run sees) and the collator.

Loading one item's audio is ``af2.data.dataset.ManifestDataset``; the sequence bookkeeping
(template, padding, labels) is ``af2.tokens``'; this module turns a list of samples into one batch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from af2.audio.features import pad_windows
from af2.config import TokensConfig
from af2.data.blend import blend_epoch
from af2.data.dataset import Sample
from af2.data.manifest import ManifestItem, read_manifest
from af2.errors import ConfigError, ManifestError
from af2.tokens import encode_training_batch, fewshot_audio_limit, special_token_ids
from af2.train.config import DataConfig


def _manifest_file(root: Path, name: str) -> Path:
    for suffix in (".json", ".jsonl"):
        if (root / f"{name}{suffix}").is_file():
            return root / f"{name}{suffix}"
    raise ManifestError(f"data.blend names {name!r} but neither {root / name}.json nor .jsonl exists; "
                            "fix data.dataset_file_root or the blend key")


def blended_items(data: DataConfig) -> list[ManifestItem]:
    """Every item the whole blend schedule uses, once per use (spec 6.3): over ``1/global_weight``
    blend epochs each dataset contributes about ``N * weight`` items. The engine shuffles them."""
    if not data.blend:
        raise ConfigError("data.blend is empty: map each manifest (path without .json under "
                         "data.dataset_file_root) to a weight")
    root = Path(data.dataset_file_root)
    manifests = {name: read_manifest(_manifest_file(root, name)).items for name in data.blend}
    sizes = {name: len(items) for name, items in manifests.items()}
    epochs = max(1, round(1 / data.global_weight))
    return [manifests[name][i] for e in range(epochs) for name, i in blend_epoch(sizes, data.blend,
                                                                                 data.global_weight, e)]


class Collator:
    """Samples → ``windows`` (B, W, S), ``window_mask`` (B, W), ``input_ids``, ``attention_mask`` and
    ``labels`` (B, T), with the official training template and label masking (spec 5.3). With
    ``fewshot_tokens`` also ``audio_limit`` (B, T): the official few-shot cross-attention mask."""

    def __init__(self, tokenizer, tokens: TokensConfig, max_windows: int, fewshot_tokens: int | None = None):
        self.tokenizer, self.tokens, self.max_windows = tokenizer, tokens, max_windows
        self.fewshot_tokens = fewshot_tokens

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        windows, mask = pad_windows([s.windows for s in samples], self.max_windows)
        text = encode_training_batch(self.tokenizer, [s.prompt for s in samples], [s.output for s in samples],
                                     self.tokens)
        batch = {"windows": windows, "window_mask": mask, **text}
        if self.fewshot_tokens is not None:
            audio_id = special_token_ids(self.tokenizer, self.tokens).audio
            batch["audio_limit"] = fewshot_audio_limit(text["input_ids"], audio_id, self.fewshot_tokens)
        return batch
