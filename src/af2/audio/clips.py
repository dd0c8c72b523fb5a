"""Clip editing for the corpus builder: trim silence, peak level, write 16-bit FLAC at 16 kHz.

Decoding is ``af2.audio.decode.load_mono``; this module only shapes what was decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile

from af2.audio import SAMPLE_RATE

RMS_FRAME = SAMPLE_RATE * 25 // 1000  # 25-ms frames: 400 samples


def frame_rms(x: np.ndarray, frame: int = RMS_FRAME) -> np.ndarray:
    """RMS of consecutive non-overlapping frames."""
    n = len(x) // frame
    if n == 0:
        return np.sqrt(np.mean(np.square(x), keepdims=True)) if len(x) else np.zeros(1)
    return np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))


def trim_silence(x: np.ndarray, threshold_db: float = -45.0, frame: int = RMS_FRAME) -> np.ndarray:
    """Drop leading/trailing frames quieter than ``threshold_db`` relative to the loudest frame."""
    rms = frame_rms(x, frame)
    peak = float(rms.max()) if len(rms) else 0.0
    if peak <= 0:
        return x[:0]
    loud = np.flatnonzero(rms >= peak * 10 ** (threshold_db / 20))
    return x[loud[0] * frame: min(len(x), (loud[-1] + 1) * frame)]


def normalise_peak(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def write_flac(path: str | os.PathLike, x: np.ndarray) -> Path:
    """16-bit FLAC at SAMPLE_RATE; samples are clipped to [-1, 1] first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.clip(x, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return path
