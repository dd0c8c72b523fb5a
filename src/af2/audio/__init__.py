"""AF2's audio: the spec's constants, decoding (``af2.audio.decode``) and features (``af2.audio.features``).

The constants below are the one place the input rate and the window length are written down;
everything else (``AudioConfig`` defaults, the corpus, the data tools) derives from them.

The two halves are kept apart so that the model can import the features (torch only) without
loading the decoders (PyAV, soundfile, soxr). ``from af2.audio import load_audio`` still works:
the names below are resolved from their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

SAMPLE_RATE = 16_000  # Hz; hard-coded by the official code (compute_sliding_window, inference.py)
WINDOW_SECONDS = 10.0  # HTSAT sees exactly 10-s windows
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)  # 160000
HOP_LENGTH = SAMPLE_RATE // 100  # 10-ms STFT hop: 160 samples, 1001 frames a window

_EXPORTS = {
    "features": ("max_read_seconds", "num_windows", "make_windows", "pad_windows", "log_mel"),
    "decode": ("AudioError", "AudioSource", "Channel", "DecodedAudio", "AudioHeader", "check_audio_path",
               "load_audio", "load_mono", "normalize", "probe", "prepare"),
    "clips": ("trim_silence", "normalise_peak", "write_flac"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["SAMPLE_RATE", "WINDOW_SECONDS", "WINDOW_SAMPLES", "HOP_LENGTH", *_MODULE_OF]

if TYPE_CHECKING:
    from af2.audio.clips import normalise_peak, trim_silence, write_flac
    from af2.audio.decode import (AudioError, AudioHeader, AudioSource, Channel, DecodedAudio, check_audio_path,
                                  load_audio, load_mono, normalize, prepare, probe)
    from af2.audio.features import log_mel, make_windows, max_read_seconds, num_windows, pad_windows


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'af2.audio' has no attribute {name!r}")
    return getattr(importlib.import_module(f"af2.audio.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
