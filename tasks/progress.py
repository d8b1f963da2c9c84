"""Live progress of long stages: a Prefect progress artifact (the UI) and, when a person runs
refinery in a terminal, a rich progress bar."""

import sys
import time
from types import TracebackType

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from rich.progress import Progress


class StageProgress:
    """Progress of one stage from 0 to `total` units (partitions, steps, shards).

    Usable inside a flow or a task run; the artifact belongs to that run and is updated at
    most every `EVERY` seconds (and at the end), whatever the number of units.
    """

    EVERY = 2.0

    def __init__(self, stage: str, total: int, unit: str = "partitions") -> None:
        self.total, self.done = max(total, 1), 0
        self._artifact = create_progress_artifact(
            progress=0.0,
            key=f"{stage.replace('_', '-')}-progress",
            description=f"{stage}: {unit} done of {total}",
        )
        self._updated = time.monotonic()
        self._bar: Progress | None = None
        if sys.stderr.isatty():
            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(f"{stage} ({unit})", total=self.total)

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int) -> None:
        """Record that `done` units are finished."""
        self.done = min(done, self.total)
        if self.done == self.total or time.monotonic() - self._updated >= self.EVERY:
            update_progress_artifact(self._artifact, progress=100.0 * self.done / self.total)
            self._updated = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
