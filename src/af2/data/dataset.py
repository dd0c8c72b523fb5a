"""The runtime dataset: manifest items -> ``Sample``s of decoded, windowed audio and their text."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from af2.audio.decode import load_audio
from af2.audio.features import make_windows, max_read_seconds, num_windows
from af2.config import AudioConfig
from af2.data.manifest import ManifestItem


@dataclass(frozen=True)
class Sample:
    id: str
    windows: torch.Tensor  # (W, S) float32
    prompt: str
    output: str
    captions: tuple[str, ...] = ()  # stage 0: every caption of the clip (positives)


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
