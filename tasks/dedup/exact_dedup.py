"""Exact dedup: drop documents whose normalized text another document already has.

In: doc_id, text. Out: the same rows, less exact duplicates (dropped with `duplicate_of`),
with `cluster_size`: how many documents had the kept one's text.
Runs as map (hash each partition), reduce (group the hashes of the whole run) and map (drop):
no step holds more than one partition's text. Each partition's keys are sorted by hash, and
the reduce is split by hash range into as many tasks as asked, each reading and holding its
range's keys only (one slice of each file), then the ranges' duplicates are joined.
Of each group the smallest doc_id is kept, so the answer does not depend on partitioning,
input order or the number of ranges.
"""

import functools

import numpy as np
import polars as pl
import pyarrow as pa
from prefect import task
from pydantic import BaseModel

from shards.reader import key_range, read_frame, read_key_range, sorted_table
from shards.schema import DOC_ID, TEXT
from shards.workdir import StageDir
from tasks.partition import drop_found, keep_each, keep_once, read_kept, run_partitions
from tasks.records import StageStats

STAGE = "exact_dedup"


class ExactDedupConfig(BaseModel, frozen=True, extra="forbid"):
    enabled: bool = True


DUPLICATE = "exact_dedup_duplicate"


def content_keys(df: pl.DataFrame) -> pl.DataFrame:
    """Per row: doc_id and a 128-bit hash of its text (two seeded 64-bit hashes, `a`, `b`)."""
    text = pl.col(TEXT)
    return df.select(DOC_ID, a=text.hash(0x5EED), b=text.hash(0xD16E57))


def by_digest(keys: pa.Table) -> pa.Table:
    """A partition's content keys with their `row`, sorted by `a`: a range of hashes is then
    one slice of the file, whatever the number of ranges."""
    rows = keys.append_column("row", pa.array(np.arange(keys.num_rows, dtype=np.uint32)))
    return sorted_table(rows.sort_by([("a", "ascending"), ("row", "ascending")]), "a")


def find_duplicates(keys: pl.DataFrame) -> pl.DataFrame:
    """The rows of every group of documents with the same text.

    Args:
        keys: `part`, `row`, doc_id and the digest (`a`, `b`) of every document of the run.

    Returns:
        `part`, `row`, `duplicate_of` (the kept doc_id; null for the kept row itself) and
        `cluster_size` (the group's size) of every row in a group of two or more.
    """
    # Most texts occur once: only the rows of a repeated text are sorted and grouped.
    digest = ["a", "b"]
    ordered = keys.filter(pl.struct(digest).is_duplicated()).sort(DOC_ID, "part", "row")
    first = pl.int_range(pl.len()).over(digest) == 0
    return (
        ordered.with_columns(
            duplicate_of=pl.when(first).then(None).otherwise(pl.col(DOC_ID).first().over(digest)),
            cluster_size=pl.len().over(digest).cast(pl.UInt32),
        )
        .filter(pl.col("cluster_size") > 1)
        .select("part", pl.col("row").cast(pl.UInt32), "duplicate_of", "cluster_size")
    )


KEYS_SCHEMA = {DOC_ID: pl.String, "a": pl.UInt64, "b": pl.UInt64, "row": pl.UInt32,
               "part": pl.String}  # fmt: skip


def range_keys(out: StageDir, parts: list[str], index: int, ranges: int) -> pl.DataFrame:
    """The content keys in hash range `index` of `ranges`, from every partition (one slice of
    each file), with their partition name and row number."""
    lo, hi = key_range(index, ranges)
    found = [
        pl.from_arrow(read_key_range(out.keys(p), lo, hi, [DOC_ID, "a", "b", "row"])).with_columns(
            part=pl.lit(p)
        )
        for p in parts
    ]
    return pl.concat([pl.DataFrame(schema=KEYS_SCHEMA), *found], how="vertical_relaxed")


@task(name="exact_dedup_keys")
def hash_partitions(parts: list[str], src: StageDir, out: StageDir) -> None:
    """Write the content keys of each partition of `parts`."""
    reads = [functools.partial(read_kept, src, part, [DOC_ID, TEXT]) for part in parts]
    keep_each([out.keys(part) for part in parts], reads, content_keys, arrange=by_digest)


@task(name="exact_dedup_group")
def group_range(out: StageDir, parts: list[str], index: int, ranges: int) -> None:
    """Find the duplicates of the whole run in one hash range (once per range)."""
    keep_once(
        out.duplicates_range(index, ranges),
        lambda: find_duplicates(range_keys(out, parts, index, ranges)),
    )


@task(name="exact_dedup_join")
def join_ranges(out: StageDir, ranges: int) -> None:
    """Join the ranges' duplicates into `out.duplicates` (once), in partition and row order:
    the same file whatever the number of ranges."""

    def joined() -> pl.DataFrame:
        found = [read_frame(out.duplicates_range(i, ranges)) for i in range(ranges)]
        return pl.concat(found).sort("part", "row")

    keep_once(out.duplicates, joined)


@task(name="exact_dedup")
def exact_dedup(parts: list[str], src: StageDir, out: StageDir) -> StageStats:
    """Drop the duplicates found in the partitions of `parts`."""
    drop = drop_found(out.duplicates, STAGE, DUPLICATE)
    return run_partitions(src, out, parts, drop, named=True)
