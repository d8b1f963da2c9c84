"""When a step runs: map steps per partition and reduce steps over the run, each done once.

Where the files are is `shards.workdir.StageDir`'s business. A map step (`run_partition`)
reads a partition, turns it into kept and removed rows and saves both with its stats, which
mark the partition done: a partition killed half way is simply computed again. A reduce step
(`keep_once`) computes a result of the whole run once and keeps it as a file, written
atomically, so a file that exists is a finished result.

The flow runs consecutive map steps together (`run_steps`): one task run takes a batch of
partitions through several stages, each stage still saving its own rows and stats, and hands
each partition's kept rows to the next stage in memory rather than reading them back. Steps
that decide each row on its own take a group of partitions in one call (`run_partitions`
for kept and removed rows, `keep_each` for per-partition keys) and split the result back:
each partition's files are the bytes it would get alone.
"""

import functools
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from prefect import Task, task

from shards.reader import read_frame
from shards.workdir import ReleasedRows, StageDir
from shards.writer import write_table
from tasks.records import ROW, StageResult, StageStats, drop_duplicates, text_bytes


def done(out: StageDir, part: str) -> StageStats | None:
    """The stats of a finished partition of `out`, or None if it must be (re)computed."""
    found = out.read_stats(part)
    return StageStats.from_dict(found) if found is not None else None


_handoff = threading.local()  # kept rows saved by this thread's `run_steps`, by path


def save(out: StageDir, part: str, result: StageResult, stats: StageStats) -> StageStats:
    """Save partition `part`'s kept and removed rows under `out`, then its stats (the marker)."""
    # One chunk each: a file's bytes then depend on its rows alone, not on how they were
    # computed (alone, or split from partitions read together).
    kept, removed = result.kept.rechunk(), result.removed.rechunk()
    out.write_partition(part, kept.to_arrow(), removed.to_arrow(), stats.to_dict())
    if (held := getattr(_handoff, "frames", None)) is not None:
        held[out.kept(part)] = kept
    return stats


def read_kept(src: StageDir, part: str, columns: list[str] | None = None) -> pl.DataFrame:
    """The rows `src` kept of `part` (only `columns`, if given): handed over in memory when
    this thread's `run_steps` has just saved them (each is read once, by the next stage),
    else read from the file."""
    held = getattr(_handoff, "frames", None) or {}
    found = held.pop(src.kept(part), None)
    if found is not None:
        return found if columns is None else found.select(columns)
    try:
        return read_frame(src.kept(part), columns)
    except FileNotFoundError:
        if src.released([part]):
            raise ReleasedRows(src.path.name, part) from None
        raise


def run_partition(
    src: StageDir | None,
    out: StageDir,
    part: str,
    fn: Callable[[pl.DataFrame], StageResult],
    *,
    read: Callable[[], pl.DataFrame] | None = None,
    bytes_in: int | None = None,
    adds: bool = False,
) -> StageStats:
    """Apply `fn` to partition `part` and save the result under `out`, unless already done.

    Args:
        src: The stage whose kept rows of `part` are `fn`'s input (unless `read` is given).
        out: Where the kept rows, the ledger rows and the stats go.
        part: The partition.
        fn: The step: the rows read to a `StageResult`.
        read: Reads the rows of `part` instead (its input files, or rows computed first).
        bytes_in: The input's bytes when not the text of the rows read (ingest: the files').
        adds: `fn` makes new documents besides the rows read (augment): they count in `n_in`
            and are the stats' `added`.

    Returns:
        The partition's stats (those saved by an earlier run, when it is done).
    """
    if (stats := done(out, part)) is not None:
        return stats
    start = time.perf_counter()
    df = read() if read is not None else read_kept(src, part)  # type: ignore[arg-type]
    result = fn(df)
    n_in = result.kept.height + result.removed.height if adds else df.height
    nbytes = text_bytes(df) if bytes_in is None else bytes_in
    stats = result.stats(out.stage, n_in, nbytes, time.perf_counter() - start)
    stats.added = n_in - df.height
    return save(out, part, result, stats)


def run_partitions(
    src: StageDir | None,
    out: StageDir,
    parts: Sequence[str],
    fn: Callable[..., StageResult],
    *,
    reads: Sequence[Callable[[], pl.DataFrame]] | None = None,
    sizes: Sequence[int] | None = None,
    named: bool = False,
) -> StageStats:
    """`run_partition` over several partitions with one call of `fn` on their rows together,
    for steps that decide each row on its own: the fixed cost of a call (building a query,
    loading tokenizers) is paid once, however small the partitions. Each partition's rows
    and stats are saved as `run_partition` saves them, and are the same bytes.

    `fn` must carry the `ROW` column through to its kept rows and ledger rows (`ledger_rows`
    does); `reads` and `sizes` are `run_partition`'s `read` and `bytes_in`, per partition.
    With `named`, `fn` also takes the names of the partitions read, in order, and their
    numbers of rows (a step that looks rows up by partition, such as a dedup stage's drop).

    Returns:
        The partitions' stats, summed.
    """
    total = StageStats(out.stage)
    todo = []
    for i, part in enumerate(parts):
        stats = done(out, part)
        total, todo = (total + stats, todo) if stats is not None else (total, [*todo, i])
    if not todo:
        return total
    start = time.perf_counter()
    frames = [reads[i]() if reads else read_kept(src, parts[i]) for i in todo]  # type: ignore[arg-type]
    heights = np.array([f.height for f in frames])
    rows = pl.concat(frames, how="vertical_relaxed").with_row_index(ROW)
    result = fn(rows, [parts[i] for i in todo], heights) if named else fn(rows)
    if any(ROW not in f.columns and f.height for f in (result.kept, result.removed)):
        raise RuntimeError(f"{out.stage}: the step lost the {ROW} column; run it per partition")
    seconds = (time.perf_counter() - start) / max(1, int(heights.sum()))
    kept, removed = _by_partition(result.kept, heights), _by_partition(result.removed, heights)
    for k, i in enumerate(todo):
        one = StageResult(kept[k], removed[k])
        nbytes = sizes[i] if sizes is not None else text_bytes(frames[k])
        total += save(out, parts[i], one, one.stats(out.stage, frames[k].height, nbytes,
                                                    seconds * frames[k].height))  # fmt: skip
    return total


def _by_partition(df: pl.DataFrame, heights: np.ndarray) -> list[pl.DataFrame]:
    """Split rows tagged with `ROW` back into their partitions, in order, without `ROW`."""
    if ROW not in df.columns:  # no rows: nothing to split
        return [df] * len(heights)
    which = np.searchsorted(np.cumsum(heights), df[ROW].to_numpy(), side="right")
    rows = df.drop(ROW)
    if np.any(np.diff(which) < 0):  # a step that reordered rows across partitions
        return [rows.filter(pl.Series(which == k)) for k in range(len(heights))]
    # In order (as row-wise steps keep them): each partition's rows are one slice. A file
    # written from a slice has the bytes of one written from the partition's rows alone.
    ends = np.searchsorted(which, np.arange(len(heights) + 1)).tolist()
    return [rows.slice(a, b - a) for a, b in itertools.pairwise(ends)]


def duplicates_in(path: Path, part: str) -> pl.DataFrame:
    """The rows of partition `part` in a dedup stage's duplicates file (`row`, ...): the
    file is read once per process and kept, split by partition, while it stays the same."""
    stat = path.stat()
    return _duplicates(path, stat.st_mtime, stat.st_size).get(part, _NO_DUPLICATES)


def drop_found(
    path: Path, stage: str, reason: str
) -> Callable[[pl.DataFrame, list[str], np.ndarray], StageResult]:
    """A `named` step for `run_partitions` that drops the rows a dedup stage's duplicates
    file (at `path`) lists, with `reason`: each partition's rows are shifted to where the
    partition sits among those read together."""

    def drop(df: pl.DataFrame, parts: list[str], heights: np.ndarray) -> StageResult:
        starts = np.concatenate([[0], np.cumsum(heights)[:-1]])
        found = [duplicates_in(path, part).with_columns(pl.col("row") + int(start))
                 for part, start in zip(parts, starts, strict=True)]  # fmt: skip
        return drop_duplicates(df, pl.concat(found), stage, reason)

    return drop


_NO_DUPLICATES = pl.DataFrame(
    schema={"row": pl.UInt32, "duplicate_of": pl.String, "cluster_size": pl.UInt32}
)


@functools.lru_cache(maxsize=2)
def _duplicates(path: Path, mtime: float, size: int) -> dict[str, pl.DataFrame]:
    found = read_frame(path).partition_by("part", as_dict=True, include_key=False)
    return {key[0]: frame for key, frame in found.items()}


def keep_once(
    path: Path,
    compute: Callable[[], pl.DataFrame | pa.Table],
    compression: Literal["zstd", "lz4"] | None = "zstd",
) -> None:
    """Compute a result once and keep it at `path`: the reduce steps' results of the whole
    run, and files of one partition that later steps read. Skipped when `path` exists; it is
    written atomically, so a killed run leaves none behind.

    Args:
        path: The result's file (a name from `shards.workdir.StageDir`).
        compute: Makes the result.
        compression: As `shards.writer.write_table` takes it (None for memory-mapped files).
    """
    if path.exists():
        return
    table = compute()
    write_table(table.to_arrow() if isinstance(table, pl.DataFrame) else table, path, compression)


def keep_each(
    paths: Sequence[Path],
    reads: Sequence[Callable[[], pl.DataFrame]],
    compute: Callable[[pl.DataFrame], pl.DataFrame | pa.Table],
    compression: Literal["zstd", "lz4"] | None = "zstd",
    arrange: Callable[[pa.Table], pa.Table] | None = None,
) -> None:
    """`keep_once` for several partitions, with one call of `compute` on their rows together
    (the fixed cost of a call is paid once, however small the partitions): `compute` must
    give one row per row read, in order, as a step that keys each row on its own does.
    `paths[i]` is made from the rows `reads[i]` gives (passed through `arrange`, which may
    reorder them, before they are written); one that exists is skipped."""
    todo = [i for i, path in enumerate(paths) if not path.exists()]
    if not todo:
        return
    frames = [reads[i]() for i in todo]
    found = compute(pl.concat(frames, how="vertical_relaxed"))
    table = found.to_arrow() if isinstance(found, pl.DataFrame) else found
    if table.num_rows != sum(f.height for f in frames):
        raise RuntimeError(f"{paths[todo[0]].parent.name}: not one result row per row read")
    start = 0
    for i, frame in zip(todo, frames, strict=True):
        # Taken into fresh buffers (a written slice can carry its neighbours' bits): the
        # file has the bytes of one computed from the partition's rows alone.
        rows = table.take(np.arange(start, start + frame.height))
        write_table(rows if arrange is None else arrange(rows), paths[i], compression)
        start += frame.height


@dataclass(frozen=True)
class Step:
    """One map step over the partitions of a batch: `task.fn(part, *args)` for each, or, for a
    `grouped` step, `task.fn(parts, *args)` once per group of partitions (`run_partitions`).

    Args:
        task: The stage's Prefect task (its function is called, not a task run per partition).
        args: The arguments after the partition(s).
        whole: Pass the partition object (ingest's input pieces) rather than its name.
        grouped: The task takes a list of partitions.
    """

    task: Task
    args: tuple[Any, ...]
    whole: bool = False
    grouped: bool = False

    def run(self, group: list[Any]) -> list[Any]:
        """The task's results on `group`: one per partition, or one for a grouped step."""
        given = [p if self.whole else getattr(p, "name", p) for p in group]
        if self.grouped:
            return [self.task.fn(given, *self.args)]
        return [self.task.fn(part, *self.args) for part in given]


GROUP_BYTES = 64 << 20  # input bytes of the partitions a grouped step takes at once


def groups(parts: Sequence[Any], limit: int = GROUP_BYTES) -> list[list[Any]]:
    """Consecutive runs of `parts` of at most `limit` input bytes (a partition's `size`; one
    known only by name counts a sixteenth of `limit`), each run at least one partition."""
    out: list[list[Any]] = []
    held = 0
    for part in parts:
        size = getattr(part, "size", limit // 16)
        if not out or held + size > limit:
            out.append([])
            held = 0
        out[-1].append(part)
        held += size
    return out


@task(name="map")
def run_steps(parts: Sequence[Any], steps: list[Step]) -> list[StageStats | None]:
    """Take the partitions of `parts`, a group at a time, through `steps` in order, the kept
    rows of one step handed to the next in memory; return each step's stats summed over the
    batch (None for a step without stats, such as a dedup stage's keys)."""
    totals: list[StageStats | None] = [None] * len(steps)
    for group in groups(parts):
        hand_over(True)
        try:
            for i, step in enumerate(steps):
                for stats in step.run(group):
                    if isinstance(stats, StageStats):
                        totals[i] = stats if totals[i] is None else totals[i] + stats
        finally:
            hand_over(False)
    return totals


def hand_over(on: bool) -> None:
    """Start (or end) keeping this thread's saved kept rows in memory for the next step."""
    _handoff.frames = {} if on else None


def batches(parts: Sequence[Any], slots: int, per_slot: int = 4) -> list[list[Any]]:
    """Deal `parts` round robin into at most `per_slot` batches per worker slot: enough task
    runs to keep every worker busy and balance uneven partitions, few enough that the
    orchestration's cost per task run stays flat in the number of partitions."""
    n = max(1, min(len(parts), slots * per_slot))
    return [list(parts[i::n]) for i in range(n) if parts[i::n]]
