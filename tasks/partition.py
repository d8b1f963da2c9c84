"""When a step runs: map steps per partition and reduce steps over the run, each done once.

Where the files are is `shards.workdir.StageDir`'s business. A map step (`run_partition`)
reads a partition, turns it into kept and removed rows and saves both with its stats, which
mark the partition done: a partition killed half way is simply computed again. A reduce step
(`keep_once`) computes a result of the whole run once and keeps it as a file, written
atomically, so a file that exists is a finished result.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa

from shards.reader import read_frame
from shards.workdir import StageDir
from shards.writer import write_table
from tasks.records import StageResult, StageStats, text_bytes


def done(out: StageDir, part: str) -> StageStats | None:
    """The stats of a finished partition of `out`, or None if it must be (re)computed."""
    found = out.read_stats(part)
    return StageStats.from_dict(found) if found is not None else None


def save(out: StageDir, part: str, result: StageResult, stats: StageStats) -> StageStats:
    """Save partition `part`'s kept and removed rows under `out`, then its stats (the marker)."""
    out.write_partition(part, result.kept.to_arrow(), result.removed.to_arrow(), stats.to_dict())
    return stats


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
    df = read() if read is not None else read_frame(src.kept(part))  # type: ignore[union-attr]
    result = fn(df)
    n_in = result.kept.height + result.removed.height if adds else df.height
    nbytes = text_bytes(df) if bytes_in is None else bytes_in
    stats = result.stats(out.stage, n_in, nbytes, time.perf_counter() - start)
    stats.added = n_in - df.height
    return save(out, part, result, stats)


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
