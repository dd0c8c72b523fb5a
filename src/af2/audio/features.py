"""Audio features (spec 1.2-1.3): 10-s windows and the log-mel spectrogram. torch only.

The model imports this module; it must never import a decoder (see ``af2.audio.decode``).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from af2.config import AudioConfig


def max_read_seconds(cfg: AudioConfig) -> float:
    """Seconds the official loader reads: max_windows * (window - overlap) + overlap."""
    return cfg.max_windows * (cfg.window_seconds - cfg.window_overlap_seconds) + cfg.window_overlap_seconds


def num_windows(num_samples: int, cfg: AudioConfig) -> int:
    """Windows the official loader cuts from ``num_samples`` samples (spec 1.2)."""
    size, hop = cfg.window_samples, cfg.hop_samples
    if num_samples <= size:
        return 1
    return min(cfg.max_windows, 1 + math.ceil((num_samples - size) / hop))


def make_windows(samples: np.ndarray | torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Cut (T,) audio into zero-padded windows (W, window_samples) float32, W <= cfg.max_windows."""
    x = torch.as_tensor(samples)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"make_windows expects non-empty 1-D audio, got shape {tuple(x.shape)}")
    if cfg.hop_samples <= 0:
        raise ValueError(f"window_overlap_seconds ({cfg.window_overlap_seconds}) must be below "
                         f"window_seconds ({cfg.window_seconds})")
    size, hop = cfg.window_samples, cfg.hop_samples
    w = num_windows(x.shape[0], cfg)
    full = (w - 1) * hop + size
    # Cast after padding: float64 k/32767 -> float32 is the official (x / 32767.0).astype(float32).
    padded = torch.zeros(full, dtype=x.dtype)
    keep = min(full, x.shape[0])
    padded[:keep] = x[:keep]
    return padded.unfold(0, size, hop).to(torch.float32).contiguous()  # (W, S)


def pad_windows(windows: Sequence[np.ndarray | torch.Tensor], max_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-clip windows (W_i, S) into (B, Wmax, S) float32 plus a (B, Wmax) mask (1 = real).

    Wmax is the largest W_i; a clip with more than ``max_windows`` windows is an error, since
    make_windows never produces one.
    """
    if len(windows) == 0:
        raise ValueError("pad_windows needs at least one clip")
    clips = [torch.as_tensor(w, dtype=torch.float32) for w in windows]
    for i, clip in enumerate(clips):
        if clip.ndim != 2 or clip.shape[1] != clips[0].shape[1] or clip.shape[0] == 0:
            raise ValueError(f"clip {i} has windows of shape {tuple(clip.shape)}; expected (W, "
                             f"{clips[0].shape[1]}) with W >= 1")
        if clip.shape[0] > max_windows:
            raise ValueError(f"clip {i} has {clip.shape[0]} windows, more than max_windows={max_windows}; "
                             "make its windows with the same AudioConfig.max_windows")
    lengths = torch.tensor([clip.shape[0] for clip in clips])
    batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)  # (B, Wmax, S), zero padded
    mask = (torch.arange(batch.shape[1])[None, :] < lengths[:, None]).to(torch.float32)  # (B, Wmax)
    return batch, mask


# ---------------------------------------------------------------------------------------------
# log-mel


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)  # HTK


@functools.lru_cache(maxsize=16)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float,
                 device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """HTK triangular filterbank (n_fft//2+1, n_mels), no area normalisation (torchaudio semantics).

    Built in float32 like torchaudio's default, then cast. Cached: treat the result as read-only.
    """
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    mels = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)  # (n_mels + 2,) Hz
    widths = edges[1:] - edges[:-1]
    slopes = edges[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    rising = (-1.0 * slopes[:, :-2]) / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return fb.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _hann(win_length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True, dtype=torch.float32).to(device=device, dtype=dtype)


def log_mel(windows: torch.Tensor, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Log-mel in dB of audio windows: (..., S) -> (..., frames, n_mels), e.g. (W, 160000) -> (W, 1001, 64).

    torchaudio MelSpectrogram (periodic Hann, centred reflect-padded STFT, power 2, HTK mels, no
    norm) then AmplitudeToDB(top_db=None) = 10*log10(max(P, amin)). Batched, differentiable;
    half-precision inputs are computed in float32.
    """
    x = windows if windows.dtype in (torch.float32, torch.float64) else windows.float()
    lead, length = x.shape[:-1], x.shape[-1]
    spec = torch.stft(x.reshape(-1, length), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                      win_length=cfg.win_length, window=_hann(cfg.win_length, x.device, x.dtype),
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spec.abs().pow(2.0)  # (N, n_freqs, frames)
    fb = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.f_min), float(cfg.f_max), x.device, x.dtype)
    mel = torch.matmul(power.transpose(-1, -2), fb)  # (N, frames, n_mels)
    db = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
    return db.reshape(*lead, *db.shape[-2:])
