"""Training samples from manifests: the blend, audio loading and windowing, and the collator.

The sequence bookkeeping (template, padding, labels) is ``af2.tokens``'; this module only decides
which items a run sees and turns a list of samples into one batch of tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from af2.audio import load_audio, make_windows, max_read_seconds, num_windows, pad_windows
from af2.config import AudioConfig, TokensConfig
from af2.data.blend import blend_epoch
from af2.data.manifest import ManifestItem, read_manifest
from af2.errors import ConfigError, ManifestError
from af2.tokens import encode_training_batch, fewshot_audio_limit, special_token_ids
from af2.train.config import DataConfig


@dataclass(frozen=True)
class Sample:
    id: str
    windows: torch.Tensor  # (W, S) float32
    prompt: str
    output: str
    captions: tuple[str, ...] = ()  # stage 0: every caption of the clip (positives)


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


class ManifestDataset:
    """``dataset[i]`` loads item ``i``'s audio (from ``audio_start``, at most ``max_windows`` windows)
    and returns a ``Sample``; a broken file raises (the engine's broken-sample policy decides).

    As the official reader, it seeks to ``audio_start`` and then reads ``audio_start`` seconds more
    than the windows hold (``(start + duration) * sr`` frames): that over-read tail is dropped by
    the windowing but takes part in the peak normalisation (spec 1.1)."""

    def __init__(self, items: list[ManifestItem], data_root: str, audio: AudioConfig):
        self.items, self.data_root, self.audio = items, data_root, audio

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        item = self.items[i]
        seconds = item.audio_start + max_read_seconds(self.audio)
        decoded = load_audio(item.audio_path(self.data_root), sample_rate=self.audio.sample_rate, max_seconds=seconds,
                             start_seconds=item.audio_start)
        captions = tuple(item.extra.get("captions", ())) or (item.output,)
        return Sample(id=item.id, windows=make_windows(decoded.samples, self.audio), prompt=item.prompt,
                      output=item.output, captions=captions)

    def lengths(self) -> list[tuple[int, int]]:
        """(audio windows, text characters) per item, from the manifest alone, for bucketing."""
        sr = self.audio.sample_rate
        return [(num_windows(max(1, int(math.ceil(it.duration * sr))), self.audio), len(it.prompt) + len(it.output))
                for it in self.items]


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


def stage_audio_config(audio: AudioConfig, windows: int) -> AudioConfig:
    return replace(audio, max_windows=windows)
