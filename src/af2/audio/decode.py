"""Decoding (spec 1.1): any file, bytes or array -> normalised mono float64 at 16 kHz; header probing.

The one decoder of af2 (inference, the server, the training data, the corpus builder) and the one
header prober (``af2 data check``). Pure functions in the style of whisper's ``audio.py``. The
order of operations reproduces the official ``read_audio`` / ``load_audio`` bit for bit where the
golden fixture checks it (windows):

    read at most max_seconds -> /peak if peak > 1 -> resample to 16 kHz (soxr HQ)
    -> first channel -> peak-normalise -> int16 round trip

Every float step before the windows are cast to float32 runs in float64, as numpy does in the
official code; doing them in float32 puts some samples 1 LSB off. Windows and log-mel live in
``af2.audio.features``.
"""

from __future__ import annotations

import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import av
import numpy as np
import soundfile as sf
import soxr
import torch

from af2.audio import SAMPLE_RATE
from af2.audio.features import make_windows, max_read_seconds
from af2.config import AudioConfig
from af2.errors import AudioError  # noqa: F401  (re-exported: raised here, defined in af2.errors)

INT16_MAX = 32767  # np.iinfo(np.int16).max: the official round trip multiplies and divides by it
RESAMPLE_QUALITY = "HQ"  # librosa 0.11 default res_type 'soxr_hq'
# A decode that yields fewer frames than the header promised, by more than this, is a truncated file.
_SHORTFALL_TOLERANCE_S = 0.1
# Sample rates outside this range are refused: a header claiming 2**31 Hz would make the resampler
# run for minutes, and below 1 kHz nothing AF2 listens for survives.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
# Read at most this much of any input, even with max_seconds=None (4 hours at 768 kHz is 85 GB).
MAX_READ_SECONDS = 3600.0
_BLOCK_FRAMES = 1 << 16
# libsndfile subtypes whose frame count in the header is only an estimate (no sample-exact index).
_INEXACT_SUBTYPES = frozenset({"MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "VORBIS", "OPUS"})
# soundfile cannot read these; FFmpeg (PyAV) can. Anything else tries soundfile first.
_FFMPEG_SUFFIXES = frozenset({".m4a", ".aac", ".mp4", ".m4b", ".3gp", ".webm", ".wma", ".mka", ".mkv", ".amr"})

Channel = Literal["first", "mean"]
AudioSource = Union[str, Path, bytes, tuple[np.ndarray, int]]


@dataclass(frozen=True)
class DecodedAudio:
    """Normalised mono audio at ``sample_rate`` plus what was known about the original.

    ``samples`` are float64 multiples of 1/32767 (the official int16 round trip), shape (T,).
    ``duration_s`` is the whole original's length (from the header when only a prefix was read;
    None if the container does not say); ``kept_s`` is how much of it was read and
    ``truncated_s`` how much was left unread (None when ``duration_s`` is unknown).
    """

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    channels: int
    duration_s: float | None
    kept_s: float
    truncated_s: float | None
    source: str

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])


# ---------------------------------------------------------------------------------------------
# decoding


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return "<array>"


def _max_frames(max_seconds: float | None, sample_rate: int, name: str = "audio") -> int:
    """Frames to read at ``sample_rate``: ``max_seconds`` worth, never more than MAX_READ_SECONDS."""
    if not (isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool)
            and MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise AudioError(f"{name}: sample rate {sample_rate!r} Hz is outside {MIN_SAMPLE_RATE:,}-{MAX_SAMPLE_RATE:,} Hz; "
                         "resample the audio (e.g. ffmpeg -i IN -ar 16000 OUT.wav)")
    if max_seconds is not None and not max_seconds > 0:
        raise AudioError(f"max_seconds must be positive, got {max_seconds!r}")
    seconds = MAX_READ_SECONDS if max_seconds is None else min(float(max_seconds), MAX_READ_SECONDS)
    return int(seconds * sample_rate)  # official: int((start + duration) * sr) with start = 0


def _int_to_float(data: np.ndarray) -> np.ndarray:
    """Scale integer PCM to [-1, 1) as libsndfile does; floats pass through as float64."""
    if data.dtype.kind == "f":
        return data.astype(np.float64, copy=False)
    if data.dtype.kind == "u":  # unsigned 8-bit PCM is offset binary
        half = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float64) - half) / half
    if data.dtype.kind == "i":
        return data.astype(np.float64) / float(2 ** (8 * data.dtype.itemsize - 1))
    raise AudioError(f"unsupported sample dtype {data.dtype}; pass float or integer PCM")


def _start_frame(start_seconds: float, sample_rate: int, total: int | None, name: str) -> int:
    """The frame a read starts at (official: ``seek(int(start * sr))``); past the end is an error."""
    if not (start_seconds >= 0 and math.isfinite(start_seconds)):
        raise AudioError(f"{name}: start must be >= 0 s, got {start_seconds!r}; fix the manifest's audio_start")
    frame = int(start_seconds * sample_rate)
    if total is not None and frame >= total and frame > 0:
        raise AudioError(f"{name}: audio_start {start_seconds} s is at or past the end of the audio "
                         f"({total / sample_rate:.2f} s); fix the manifest's audio_start")
    return frame


def _read_array(array: np.ndarray, sample_rate: int, max_seconds: float | None, name: str,
                start_seconds: float = 0.0):
    data = np.asarray(array)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise AudioError(f"{name}: audio array must be (frames,) or (frames, channels), got shape {data.shape}")
    if data.shape[1] > 16 and data.shape[0] <= 16:
        raise AudioError(f"{name}: array of shape {data.shape} looks like (channels, frames); pass array.T")
    if data.shape[1] == 0:
        raise AudioError(f"{name}: audio array of shape {data.shape} has no channels")
    limit = _max_frames(max_seconds, sample_rate, name)
    total = data.shape[0]
    start = _start_frame(start_seconds, int(sample_rate), total, name)
    return _int_to_float(data[start:start + limit]), int(sample_rate), total


def _read_soundfile(fileobj, max_seconds: float | None, name: str, start_seconds: float = 0.0):
    with sf.SoundFile(fileobj) as f:  # an open failure lets the caller try FFmpeg instead
        sample_rate, header_total, channels = f.samplerate, f.frames, f.channels
        limit = _max_frames(max_seconds, sample_rate, name)
        start = _start_frame(start_seconds, sample_rate, header_total, name)
        exact = f.subtype not in _INEXACT_SUBTYPES
        # Official: seek(start), then read min(limit, len) frames; near the end fewer come back.
        wanted = min(limit, header_total - start)
        blocks, count = [], 0
        try:  # in blocks, so a header that lies about its length cannot make us allocate it
            if start:
                f.seek(start)
            while count < wanted:
                block = f.read(frames=min(_BLOCK_FRAMES, wanted - count), dtype="float64", always_2d=True)
                if block.shape[0] == 0:
                    break
                blocks.append(block)
                count += block.shape[0]
        except sf.LibsndfileError as exc:
            raise AudioError(f"{name}: decoding failed part-way ({exc}); the file is truncated or corrupt, "
                             "re-export or re-download it") from exc
    data = np.concatenate(blocks) if blocks else np.zeros((0, max(1, channels)))
    if wanted - count > max(_SHORTFALL_TOLERANCE_S * sample_rate, 0.01 * wanted):
        raise AudioError(f"{name}: the file is truncated: its header promises {wanted / sample_rate:.2f} s but only "
                         f"{count / sample_rate:.2f} s decode; re-export or re-download it")
    if count < wanted or exact:  # read to the end (a small shortfall is codec padding), or the header is exact
        return data, sample_rate, start + count if count < wanted else header_total
    return data, sample_rate, _count_frames(fileobj, sample_rate) or header_total


def _count_frames(fileobj, sample_rate: int) -> int | None:
    """Frames of the first audio stream by demuxing only (no decoding): the sum of packet durations,
    which for compressed codecs is what a full decode yields. None when the container does not say."""
    if isinstance(fileobj, io.BytesIO):
        fileobj.seek(0)
    try:
        with av.open(fileobj, mode="r") as container:
            stream = container.streams.audio[0]
            ticks = sum(p.duration or 0 for p in container.demux(stream))
            if not ticks or stream.time_base is None:
                return None
            return int(round(float(ticks * stream.time_base) * sample_rate))
    except (av.FFmpegError, IndexError, OSError):
        return None


def _frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float64 (samples, channels)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    return _int_to_float(data)


def _read_ffmpeg(fileobj, max_seconds: float | None, name: str, start_seconds: float = 0.0):
    with av.open(fileobj, mode="r") as container:
        if not container.streams.audio:
            raise RuntimeError("it holds no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # FFmpeg knows the container but has no decoder for the codec
            raise RuntimeError("FFmpeg has no decoder for its codec")
        sample_rate = stream.codec_context.sample_rate or stream.rate
        if not sample_rate:
            raise RuntimeError("its audio stream has no sample rate")
        limit = _max_frames(max_seconds, sample_rate, name)
        start = _start_frame(start_seconds, sample_rate, None, name)
        chunks, count, stopped_early = [], 0, False
        for frame in container.decode(stream):
            if frame.sample_rate and frame.sample_rate != sample_rate:
                raise AudioError(f"{name}: the sample rate changes mid-stream ({sample_rate} -> {frame.sample_rate} "
                                 "Hz); convert it to wav first")
            chunks.append(_frame_to_array(frame))
            count += frame.samples
            if count >= start + limit:  # do not decode a long file to the end
                stopped_early = True
                break
    if not chunks:
        return np.zeros((0, 1)), sample_rate, 0
    data = np.concatenate(chunks)[start:start + limit]
    if not stopped_early:
        return data, sample_rate, count
    total = _count_frames(fileobj, sample_rate)
    return data, sample_rate, None if total is None else max(total, start + data.shape[0])


def check_audio_path(path: str | Path) -> None:
    """Raise AudioError unless ``path`` is a non-empty, readable regular file (cheap: no decoding)."""
    p = Path(path)
    shown = str(p) if len(str(p)) <= 200 else str(p)[:200] + "..."
    if "\x00" in str(p):
        raise AudioError(f"{shown!r}: a path cannot hold a NUL byte")
    try:
        info = p.stat()
    except FileNotFoundError:
        raise AudioError(f"{shown}: no such audio file; check the path") from None
    except OSError as exc:  # a name too long, a loop of links, a folder we may not enter
        raise AudioError(f"{shown}: cannot be opened ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioError(f"{shown}: is a folder, not an audio file; pass one file (or use --input for many)")
    if not stat.S_ISREG(info.st_mode):
        raise AudioError(f"{shown}: not a regular file (a device or a pipe); pass an audio file")
    if info.st_size == 0:
        raise AudioError(f"{shown}: the file is empty (0 bytes); re-export or re-download it")
    if not os.access(p, os.R_OK):
        raise AudioError(f"{shown}: not readable (permission denied)")


def _decode(source: AudioSource, max_seconds: float | None, name: str, start_seconds: float = 0.0):
    """(data (N, C) float64, sample rate, total frames of the original or None)."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError(f"{name}: an array source is a tuple (samples, sample_rate)")
        return _read_array(source[0], source[1], max_seconds, name, start_seconds)
    if isinstance(source, (bytes, bytearray, memoryview)):
        payload, suffix = bytes(source), ""
        if not payload:
            raise AudioError(f"{name}: no audio bytes (0 bytes)")
    elif isinstance(source, (str, Path)):
        check_audio_path(source)
        payload, suffix = None, Path(source).suffix.lower()
    else:
        raise AudioError(f"unsupported audio source of type {type(source).__name__}; "
                         "pass a path, raw bytes or a (samples, sample_rate) tuple")

    readers = [_read_ffmpeg] if suffix in _FFMPEG_SUFFIXES else [_read_soundfile, _read_ffmpeg]
    failures = []
    for reader in readers:
        fileobj = str(source) if payload is None else io.BytesIO(payload)  # fresh stream per decoder
        try:
            return reader(fileobj, max_seconds, name, start_seconds)
        except AudioError:
            raise
        except (sf.LibsndfileError, av.FFmpegError, RuntimeError, EOFError, OSError, ValueError) as exc:
            failures.append(f"{'soundfile' if reader is _read_soundfile else 'ffmpeg'}: {exc}")
    raise AudioError(f"{name}: cannot decode audio ({'; '.join(failures)}). The file is corrupt, truncated "
                     "or in an unsupported codec; convert it to wav/flac (e.g. ffmpeg -i IN -ar 16000 OUT.wav)")


def _resample(x: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """librosa.resample(res_type='soxr_hq', fix=True) on one channel: soxr, then fix the length."""
    if source_rate == target_rate:
        return x
    y = soxr.resample(x, source_rate, target_rate, quality=RESAMPLE_QUALITY)
    n = int(np.ceil(x.shape[0] * (float(target_rate) / source_rate)))
    return y[:n] if y.shape[0] >= n else np.pad(y, (0, n - y.shape[0]))


def normalize(x: np.ndarray) -> np.ndarray:
    """Official peak normalisation + int16 round trip, in float64, of a mono signal (T,).

    All-positive audio is mapped 2x/|max| - 1, as the official code does. All-zero audio (where the
    official code divides 0 by 0) is returned as zeros.
    """
    lo, hi = x.min(), x.max()
    if lo == 0 and hi == 0:
        return np.zeros_like(x, dtype=np.float64)
    if lo >= 0:
        x = 2 * x / abs(hi) - 1.0
    else:
        x = x / max(abs(hi), abs(lo))
    return (np.clip(x, -1, 1) * float(INT16_MAX)).astype(np.int16) / float(INT16_MAX)


def load_audio(source: AudioSource, *, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None,
               channel: Channel = "first", start_seconds: float = 0.0) -> DecodedAudio:
    """Decode ``source`` to normalised mono float64 at ``sample_rate`` (spec 1.1).

    source: a path, the bytes of an audio file, or ``(samples, sample_rate)`` with samples shaped
    (frames,) or (frames, channels). Only the first ``max_seconds`` are read (None: all of it),
    starting ``start_seconds`` into the audio; the peak normalisation sees exactly what was read.
    channel: "first" keeps channel 0 like the official loader does for every format but mp3;
    "mean" averages the channels like its mp3 (pydub) path.
    """
    name = _describe(source)
    if channel not in ("first", "mean"):
        raise AudioError(f"channel must be 'first' or 'mean', got {channel!r}")
    data, source_rate, total = _decode(source, max_seconds, name, start_seconds)
    if data.shape[0] == 0:
        raise AudioError(f"{name}: contains no audio samples (0 s); nothing to listen to")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or infinite samples; clean the audio before passing it")

    peak_hi, peak_lo = data.max(), data.min()
    if peak_hi > 1 or peak_lo < -1:  # official: float files louder than full scale are scaled first
        data = data / max(abs(peak_hi), abs(peak_lo))
    mono = data[:, 0] if channel == "first" else data.mean(axis=1)
    samples = normalize(_resample(mono, source_rate, sample_rate))

    kept_s = data.shape[0] / source_rate
    duration_s = None if total is None else total / source_rate
    truncated_s = None if duration_s is None else max(duration_s - start_seconds - kept_s, 0.0)
    return DecodedAudio(samples=samples, sample_rate=sample_rate, source_sample_rate=source_rate,
                        channels=int(data.shape[1]), duration_s=duration_s, kept_s=kept_s,
                        truncated_s=truncated_s, source=name)


def load_mono(source: AudioSource, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``source`` to mono float32 at ``sample_rate``: the channels averaged, the level kept.

    The corpus builder's loader: the same decoders and resampler as ``load_audio``, without the
    official peak normalisation and int16 round trip (the corpus normalises clips its own way).
    """
    data, source_rate, _ = _decode(source, None, _describe(source))
    mono = data.mean(axis=1) if data.shape[0] else np.zeros(0)
    return np.ascontiguousarray(_resample(mono, source_rate, sample_rate), dtype=np.float32)


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header says, without decoding it: its rate, channels and length (None if unsaid)."""

    sample_rate: int
    channels: int
    duration_s: float | None


def probe(path: str | os.PathLike) -> AudioHeader:
    """Read the header of ``path`` (libsndfile first, FFmpeg for everything else); no decoding.

    Raises AudioError when neither can open it.
    """
    try:
        info = sf.info(str(path))
        if info.samplerate > 0 and info.frames > 0:
            return AudioHeader(info.samplerate, info.channels, info.frames / info.samplerate)
    except (RuntimeError, sf.LibsndfileError):
        pass
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            rate, channels = stream.rate or 0, stream.channels or 0
            if container.duration is not None:
                return AudioHeader(rate, channels, container.duration / 1_000_000)  # av.time_base
            if stream.duration is None or stream.time_base is None:
                return AudioHeader(rate, channels, None)
            return AudioHeader(rate, channels, float(stream.duration * stream.time_base))
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise AudioError(f"{path}: cannot read an audio header ({exc})") from exc


# ---------------------------------------------------------------------------------------------


def prepare(source: AudioSource, cfg: AudioConfig = AudioConfig(), *, channel: Channel = "first"
            ) -> tuple[torch.Tensor, DecodedAudio]:
    """Load ``source`` and cut it into model-ready windows (W, window_samples) float32."""
    audio = load_audio(source, sample_rate=cfg.sample_rate, max_seconds=max_read_seconds(cfg), channel=channel)
    return make_windows(audio.samples, cfg), audio
