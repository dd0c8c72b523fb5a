"""Small audio helpers for the corpus builder: decode to 16 kHz mono, trim silence, write FLAC."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from af2.errors import AudioError

SAMPLE_RATE = 16_000  # AF2's input rate (spec 1.1); the corpus stores everything at this rate


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(S,) or (S, C) at any rate -> (S',) float32 at 16 kHz."""
    import soxr

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        x = soxr.resample(x, sample_rate, SAMPLE_RATE).astype(np.float32)
    return np.ascontiguousarray(x)


def load_mono_16k(path: str | os.PathLike) -> np.ndarray:
    """Decode any file libsndfile or FFmpeg reads into 16 kHz mono float32."""
    import soundfile

    try:
        x, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
        return to_mono_16k(x, sr)
    except (RuntimeError, soundfile.LibsndfileError):
        pass
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(stream) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    if not chunks:
        raise AudioError(f"{path}: no audio decoded")
    return np.concatenate(chunks).astype(np.float32)


def frame_rms(x: np.ndarray, frame: int = 400) -> np.ndarray:
    """RMS of consecutive non-overlapping frames (25 ms at 16 kHz by default)."""
    n = len(x) // frame
    if n == 0:
        return np.sqrt(np.mean(np.square(x), keepdims=True)) if len(x) else np.zeros(1)
    return np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))


def trim_silence(x: np.ndarray, threshold_db: float = -45.0, frame: int = 400) -> np.ndarray:
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
    """16-bit FLAC at 16 kHz; samples are clipped to [-1, 1] first."""
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.clip(x, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return path
