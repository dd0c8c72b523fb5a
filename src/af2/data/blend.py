"""The official dataset-blending schedule (spec 6.3) as pure functions.

A dataset of N items with ``weight`` under ``global_weight`` has rate ``w = global_weight * weight``.
Its items are shuffled once with ``np.random.default_rng(seed=sum(ord(c) for c in name))``; epoch e
takes the positions ``[int(e*N*w), int((e+1)*N*w))`` of an endless stream made of that order,
followed by a fresh shuffle for every further pass k = 1, 2, ... (seeded with
``sum(ord(c) for c in f"{name}-epoch-{k}")``). Over ``1/global_weight`` epochs a dataset is seen
about ``weight`` times, so weight = number of passes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from af2.errors import ConfigError


def _seed(text: str) -> int:
    return sum(ord(c) for c in text)


def pass_order(name: str, n: int, k: int) -> np.ndarray:
    """Item order of pass ``k`` over a dataset of ``n`` items (pass 0 uses the dataset's own seed)."""
    seed = _seed(name) if k == 0 else _seed(f"{name}-epoch-{k}")
    return np.random.default_rng(seed=seed).permutation(n)


def epoch_indices(name: str, n: int, weight: float, global_weight: float, epoch: int) -> np.ndarray:
    """Item indices (into the manifest's "0".."N-1") that dataset ``name`` contributes to ``epoch``."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if weight < 0 or global_weight <= 0 or epoch < 0:
        raise ConfigError(f"blend {name!r}: need weight >= 0, global_weight > 0, epoch >= 0 "
                         f"(got {weight}, {global_weight}, {epoch})")
    w = global_weight * weight
    start, end = int(epoch * n * w), int((epoch + 1) * n * w)
    if end <= start:
        return np.zeros(0, dtype=np.int64)
    positions = np.arange(start, end, dtype=np.int64)
    passes = positions // n
    out = np.empty_like(positions)
    for k in np.unique(passes):
        sel = passes == k
        out[sel] = pass_order(name, n, int(k))[positions[sel] % n]
    return out


def blend_epoch(sizes: Mapping[str, int], weights: Mapping[str, float], global_weight: float,
                epoch: int) -> list[tuple[str, int]]:
    """The (dataset name, item index) pairs of one epoch, datasets in ``sizes`` order."""
    missing = [name for name in sizes if name not in weights]
    if missing:
        raise ConfigError(f"blend: no weight for dataset(s) {missing}; add them to dataset_blending_config")
    out: list[tuple[str, int]] = []
    for name, n in sizes.items():
        out.extend((name, int(i)) for i in epoch_indices(name, n, weights[name], global_weight, epoch))
    return out


def blend_counts(sizes: Mapping[str, int], weights: Mapping[str, float], global_weight: float,
                 epochs: Sequence[int]) -> dict[str, int]:
    """How many items each dataset contributes over ``epochs`` (for logs and the datasheet)."""
    return {name: sum(len(epoch_indices(name, n, weights[name], global_weight, e)) for e in epochs)
            for name, n in sizes.items()}
