"""A distributed, deterministic, resumable sampler over token shards.

Each epoch visits every sequence once in a seeded random order. The order is cut into global
batches of `world_size * micro_batch` sequences, and rank r takes the r-th slice of each, so
ranks never share a sequence and each reads only its own. The state is (epoch, batches done),
saved with every checkpoint: a resumed run continues with exactly the next batch.
"""

from typing import Any

import numpy as np


class ResumableSampler:
    """Yield this rank's micro-batches of sequence indices, forever, epoch after epoch.

    Args:
        n: Number of sequences.
        world_size: Ranks in the run.
        rank: This rank.
        micro_batch: Sequences per rank per micro-batch.
        seed: Seed of the per-epoch shuffle.
    """

    def __init__(self, n: int, world_size: int, rank: int, micro_batch: int, seed: int) -> None:
        if n < world_size * micro_batch:
            raise ValueError(
                f"{n} sequences are fewer than one global batch ({world_size} x {micro_batch})"
            )
        self.n, self.world_size, self.rank = n, world_size, rank
        self.micro_batch, self.seed = micro_batch, seed
        self.epoch, self.batch = 0, 0
        self._order = self._epoch_order(0)

    @property
    def batches_per_epoch(self) -> int:
        # The last incomplete global batch of an epoch is skipped, so all ranks step together.
        return self.n // (self.world_size * self.micro_batch)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next(self) -> np.ndarray:
        """This rank's indices for the next micro-batch."""
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
            self._order = self._epoch_order(self.epoch)
        size = self.world_size * self.micro_batch
        start = self.batch * size + self.rank * self.micro_batch
        self.batch += 1
        return self._order[start : start + self.micro_batch]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["n"], state["seed"]) != (self.n, self.seed):
            raise ValueError(
                f"checkpoint sampler state is for {state['n']} sequences with seed "
                f"{state['seed']}, not {self.n} with seed {self.seed}: the token shards changed"
            )
        self.epoch, self.batch = state["epoch"], state["batch"]
        self._order = self._epoch_order(self.epoch)
