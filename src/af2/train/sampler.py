"""Which samples each rank reads at each micro-step: deterministic, resumable, shardable.

A *global* micro-batch is ``batch_size * world_size`` sample indices; rank ``r`` takes slice
``r``. The order of an epoch depends only on (seed, epoch), so the position ``(epoch, batch)``
is all a checkpoint needs to continue exactly, with any number of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from af2.errors import ConfigError


@dataclass(frozen=True)
class Position:
    epoch: int = 0
    batch: int = 0  # index of the next global micro-batch within the epoch


class BatchPlan:
    def __init__(self, n_samples: int, batch_size: int, world_size: int, seed: int,
                 lengths: Sequence[tuple[int, ...]] | None = None, bucket_size: int = 50):
        global_batch = batch_size * world_size
        if n_samples < global_batch:
            raise ConfigError(f"the data has {n_samples} samples, fewer than one global micro-batch "
                             f"(batch_size {batch_size} x {world_size} ranks); lower batch_size")
        if lengths is not None and len(lengths) != n_samples:
            raise ValueError(f"got {len(lengths)} lengths for {n_samples} samples")
        self.n_samples, self.batch_size, self.world_size, self.seed = n_samples, batch_size, world_size, seed
        self.lengths, self.bucket_size = lengths, bucket_size
        self.batches_per_epoch = n_samples // global_batch  # the incomplete tail is dropped
        self._cache: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global micro-batches of ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.n_samples, generator=gen).tolist()
        size = self.batch_size * self.world_size
        if self.lengths is not None:
            # Sort inside chunks of bucket_size batches so a batch holds samples of similar length
            # (the paper's dynamic batching), then shuffle the batches so lengths do not trend.
            chunk = size * self.bucket_size
            order = [i for s in range(0, len(order), chunk)
                     for i in sorted(order[s:s + chunk], key=lambda i: self.lengths[i])]
        batches = [order[b * size:(b + 1) * size] for b in range(self.batches_per_epoch)]
        if self.lengths is not None:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[p] for p in perm]
        self._cache = (epoch, batches)
        return batches

    def rank_batch(self, position: Position, rank: int) -> list[int]:
        batch = self.epoch_batches(position.epoch)[position.batch]
        return batch[rank * self.batch_size:(rank + 1) * self.batch_size]

    def advance(self, position: Position) -> Position:
        if position.batch + 1 < self.batches_per_epoch:
            return Position(position.epoch, position.batch + 1)
        return Position(position.epoch + 1, 0)
