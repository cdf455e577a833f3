"""The training order: a function of (seed, iteration) only, PATN-style uniform sampling with replacement from
the sample table, so a resumed run sees the same batches. (The samples themselves: reidaug.data.samples.)"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

from reidaug.errors import ReidaugError


class IterationSampler(Sampler):
    """Batches for iterations [start, stop): iteration t draws `global_batch` indices uniformly with
    replacement from a generator seeded by (seed, t); DDP rank r takes its slice of that global batch."""

    def __init__(self, n: int, global_batch: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ReidaugError("no training pairs")
        if global_batch % world:
            raise ReidaugError(f"train.batch_size {global_batch} is not divisible by {world} processes")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    @staticmethod
    def indices(n: int, global_batch: int, seed: int, iteration: int) -> np.ndarray:
        return np.random.default_rng([seed, iteration]).integers(0, n, size=global_batch)

    def __iter__(self):
        b = self.global_batch // self.world
        for t in range(self.start, self.stop):
            idx = self.indices(self.n, self.global_batch, self.seed, t)
            yield idx[self.rank * b : (self.rank + 1) * b].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "n": self.n, "global_batch": self.global_batch, "start": self.start}
