"""What every augment backend shares: the `Backend` protocol, its error, batch checks and a
progress bar."""

import sys
from typing import Protocol

from tqdm import tqdm


class BackendError(Exception):
    """A batch could not be rewritten (the endpoint failed after its retries, or refused it)."""


class Backend(Protocol):
    method: str  # the augment_method column
    model_name: str  # the augment_model column

    def rewrite(
        self, texts: list[str], langs: list[str | None], variants: int, seed: int
    ) -> list[list[str]]:
        """For each text, `variants` rewrites (same order). Deterministic for a seed on CPU."""
        ...


def check_batch(texts: list[str], langs: list[str | None], variants: int) -> None:
    if len(texts) != len(langs):
        raise ValueError(f"{len(texts)} texts but {len(langs)} langs")
    if variants < 1:
        raise ValueError(f"variants must be at least 1, not {variants}")


def progress_bar(total: int, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty())
