"""A cache of a frozen audio tower's outputs, per 10-s window, for training.

When the AF-CLAP tower is frozen (stages 1 and 3) it computes the same 64 tokens for the same window
at every epoch; on a CPU that is about a third of a step. The cache keys each window by a hash of its
samples, so it needs no bookkeeping from the data layer and can never serve a stale entry.
"""

from __future__ import annotations

import hashlib

import torch

from af2.model.af2 import TOKENS_PER_WINDOW, AF2Model


class TowerCache:
    """``tokens(model, windows, window_mask)`` → (B, W·64, Da), computing only unseen windows."""

    def __init__(self, max_windows: int = 200_000):
        self.entries: dict[bytes, torch.Tensor] = {}
        self.max_windows = max_windows
        self.hits = self.misses = 0

    @staticmethod
    def key(window: torch.Tensor) -> bytes:
        return hashlib.blake2b(window.detach().cpu().numpy().tobytes(), digest_size=16).digest()

    @torch.no_grad()
    def tokens(self, model: AF2Model, windows: torch.Tensor, window_mask: torch.Tensor) -> torch.Tensor:
        B, W, S = windows.shape
        real = window_mask.bool().reshape(B * W)
        flat = windows.reshape(B * W, S)
        keys = [self.key(flat[i]) if real[i] else None for i in range(B * W)]
        missing = list(dict.fromkeys(k for k in keys if k is not None and k not in self.entries))  # distinct
        self.misses += len(missing)
        self.hits += int(real.sum()) - len(missing)
        fresh: dict[bytes, torch.Tensor] = {}
        if missing:
            first = [keys.index(k) for k in missing]
            mask = torch.ones(len(missing), 1, dtype=window_mask.dtype, device=window_mask.device)
            new = model.encode_windows(flat[torch.tensor(first)].unsqueeze(1), mask)  # (M, 64, Da)
            fresh = dict(zip(missing, new))
            for k, tokens in fresh.items():
                if len(self.entries) < self.max_windows:
                    self.entries[k] = tokens.float()
        empty = flat.new_zeros(TOKENS_PER_WINDOW, model.cfg.audio_dim)
        rows = [empty if k is None else fresh[k] if k in fresh else self.entries[k] for k in keys]
        return torch.stack([r.to(empty.dtype) for r in rows]).view(B, W * TOKENS_PER_WINDOW, -1)
