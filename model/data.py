"""A distributed, deterministic, resumable sampler over token shards.

Each epoch visits every sequence once in a seeded random order. The order is cut into global
batches of `world_size * micro_batch` sequences, and rank r takes the r-th slice of each, so
ranks never share a sequence and each reads only its own. The state is (epoch, batches done),
saved with every checkpoint: a resumed run continues with exactly the next batch.

With a `Mixture`, an epoch is as many draws as there are sequences, shared among groups of
sequences (languages, sources) by weight: a group's draws go through seeded permutations of its
sequences, as many passes as its share needs (past one pass, the group is upsampled), and the
epoch's draws are then shuffled together.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from shards.mixture import draws, pick


@dataclass(frozen=True)
class Mixture:
    """Each sequence's group, and the groups' weights.

    Args:
        names: The groups' names.
        groups: Each sequence's group (an index into `names`).
        weights: Each group's weight (any scale; groups at 0 are left out).
    """

    names: list[str]
    groups: np.ndarray
    weights: np.ndarray

    def draws(self) -> np.ndarray:
        """Sequences drawn per epoch from each group: as many draws as sequences, shared by
        weight (`shards.mixture.draws`)."""
        sizes = np.bincount(self.groups, minlength=len(self.names))
        return draws(sizes, self.weights, len(self.groups))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per group: weight, sequences, draws per epoch and what they are in passes over it."""
        sizes = np.bincount(self.groups, minlength=len(self.names))
        return {name: {"weight": float(w), "sequences": int(n), "drawn": int(d),
                       "passes": round(d / n, 3) if n else 0.0}
                for name, w, n, d in zip(self.names, self.weights, sizes, self.draws(),
                                         strict=True) if n or w}  # fmt: skip


class ResumableSampler:
    """Yield this rank's micro-batches of sequence indices, forever, epoch after epoch.

    Args:
        n: Number of sequences.
        world_size: Ranks in the run.
        rank: This rank.
        micro_batch: Sequences per rank per micro-batch.
        seed: Seed of the per-epoch shuffle.
    """

    def __init__(self, n: int, world_size: int, rank: int, micro_batch: int, seed: int,
                 mixture: Mixture | None = None) -> None:  # fmt: skip
        if n < world_size * micro_batch:
            raise ValueError(
                f"{n} sequences are fewer than one global batch ({world_size} x {micro_batch})"
            )
        self.n, self.world_size, self.rank = n, world_size, rank
        self.micro_batch, self.seed, self.mixture = micro_batch, seed, mixture
        self._draws = mixture.draws() if mixture is not None else None
        self.epoch, self.batch = 0, 0
        self._order = self._epoch_order(0)

    @property
    def batches_per_epoch(self) -> int:
        # The last incomplete global batch of an epoch is skipped, so all ranks step together.
        return self.n // (self.world_size * self.micro_batch)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self.mixture is None:
            return np.random.default_rng([self.seed, epoch]).permutation(self.n)
        groups = self.mixture.groups
        drawn = np.concatenate([np.zeros(0, np.int64)] + [
            pick(np.flatnonzero(groups == group), count, [self.seed, epoch, group])
            for group, count in enumerate(self._draws.tolist())
        ])  # fmt: skip
        return drawn[np.random.default_rng([self.seed, epoch]).permutation(len(drawn))]

    @property
    def mixture_key(self) -> list[int] | None:
        """What the mixture draws (per group), saved with the state: a resumed run must draw
        the same."""
        return None if self._draws is None else self._draws.tolist()

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
        return {"epoch": self.epoch, "batch": self.batch, "n": self.n, "seed": self.seed,
                "mixture": self.mixture_key}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["n"], state["seed"]) != (self.n, self.seed):
            raise ValueError(
                f"checkpoint sampler state is for {state['n']} sequences with seed "
                f"{state['seed']}, not {self.n} with seed {self.seed}: the token shards changed"
            )
        if state.get("mixture") != self.mixture_key:
            raise ValueError("checkpoint sampler state is for another pretrain.mixture")
        self.epoch, self.batch = state["epoch"], state["batch"]
        self._order = self._epoch_order(self.epoch)
