"""Mixtures: how many draws each group of items gets, and which items fill them.

Shared by the trainer's sampler (`model.data`, over token sequences) and the exports
(`tasks.output.export`, over documents), so a mixture means the same in both: `total` draws
shared by weight with the largest remainders, none for an empty group, and a group's draws
taken through seeded permutations of its items, as many passes as its share needs.
"""

import numpy as np


def draws(sizes: np.ndarray, weights: np.ndarray, total: int) -> np.ndarray:
    """Draws per group: `total` shared by `weights` among the groups with items.

    Raises:
        ValueError: when no group with items has a weight above 0.
    """
    weights = np.where(sizes > 0, weights, 0.0)
    if weights.sum() <= 0:
        raise ValueError("mixture: no item has a weight above 0")
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def pick(members: np.ndarray, count: int, seed: list[int]) -> np.ndarray:
    """`count` of `members`: whole seeded permutations of them, one per pass, cut at `count`."""
    if count == 0:
        return members[:0]
    passes = -(-count // len(members))
    orders = [np.random.default_rng([*seed, i]).permutation(len(members)) for i in range(passes)]
    return members[np.concatenate(orders)][:count]


def weights_of(names: list[str], weights: dict[str, float]) -> np.ndarray:
    """Each name's weight: its own, else that of "*", else 0."""
    return np.array([weights.get(n, weights.get("*", 0.0)) for n in names], dtype=np.float64)
