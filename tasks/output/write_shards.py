"""Shard writer: the kept documents, in input order, as Arrow IPC shards; plus the ledger.

In: the last stage's partitions. Out: the shards (zstd, `SHARD_SCHEMA`, see
`shards.writer.ShardWriter`) of about `size_limit` bytes each, the ledger with every removed row
(`shards.ledger`) and the run's manifest (`shards.manifest`). A stage that did not run leaves its
columns null.
"""

import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from prefect import task
from pydantic import BaseModel, Field

from shards import ledger
from shards.manifest import (
    build_manifest,
    finished_manifest,
    remove_unlisted_shards,
    stage_entry,
    void_manifest,
    write_manifest,
)
from shards.reader import read_frame
from shards.schema import SHARD_SCHEMA
from shards.workdir import StageDir
from shards.writer import ShardWriter
from tasks.records import StageStats

STAGE = "shards"


class ShardsConfig(BaseModel, frozen=True, extra="forbid"):
    size_limit: int = Field(64 << 20, gt=0, description="target uncompressed bytes per shard")


def to_shard_table(df: pl.DataFrame) -> pa.Table:
    """Select and cast the shard columns, adding any that no stage produced as nulls."""
    missing = [pl.lit(None).alias(name) for name in SHARD_SCHEMA.names if name not in df.columns]
    return df.with_columns(missing).select(SHARD_SCHEMA.names).to_arrow().cast(SHARD_SCHEMA)


def write_text_shards(paths: list[Path], out_dir: Path, size_limit: int) -> list[dict[str, Any]]:
    """Write the rows of the partition files `paths`, in order, as shards into `out_dir`, and
    remove the shards of an earlier run that are not written again.

    Args:
        paths: The last stage's kept rows, one file per partition.
        out_dir: The output directory.
        size_limit: Uncompressed bytes per shard.

    Returns:
        The shards' manifest entries (file, rows, bytes, sha256).
    """
    with ShardWriter(out_dir, SHARD_SCHEMA, size_limit) as writer:
        for path in paths:
            writer.write(to_shard_table(read_frame(path)))
    remove_unlisted_shards(out_dir, writer.shards)
    return writer.shards


def shard_stats(shards: list[dict[str, Any]], seconds: float) -> StageStats:
    """The shards stage's stats: every row in is kept."""
    rows, nbytes = sum(s["rows"] for s in shards), sum(s["bytes"] for s in shards)
    return StageStats(STAGE, rows, rows, bytes_out=nbytes, seconds=seconds)


@task(name="shards")
def write_shards(
    src: StageDir, parts: list[str], out_dir: Path, cfg: ShardsConfig, fingerprint: str
) -> tuple[list[dict[str, Any]], StageStats]:
    """Write the shards, unless a finished run with the same fingerprint already has."""
    if (done := finished_manifest(out_dir, fingerprint)) is not None:
        entry = done["stages"][STAGE]
        return done["shards"], StageStats(STAGE, entry["in"], entry["kept"],
                                          bytes_out=entry["bytes_out"])  # fmt: skip
    void_manifest(out_dir)  # the shards change: the old manifest no longer describes them
    start = time.perf_counter()
    shards = write_text_shards([src.kept(p) for p in parts], out_dir, cfg.size_limit)
    return shards, shard_stats(shards, time.perf_counter() - start)


@task(name="ledger")
def publish_ledger(stages: list[StageDir], parts: list[str], out_dir: Path) -> None:
    """Expose each stage's removed rows in the output's ledger (`shards.ledger.publish`)."""
    ledger.publish(out_dir, {stage.stage: [stage.ledger(p) for p in parts] for stage in stages})


@task(name="manifest")
def write_run_manifest(
    out_dir: Path,
    fingerprint: str,
    config: dict[str, Any],
    inputs: dict[str, Any],
    shards: list[dict[str, Any]],
    stages: dict[str, tuple[StageStats, float]],
    work: dict[str, str],
    beside: list[str] | None = None,
) -> dict[str, Any]:
    """Check that every stage balances and write `manifest.json`, the run's last file.
    `work` names each stage's work directory (what `refinery refilter` starts from), `beside`
    the other work directories the run used (the quality signals)."""
    entries = {
        name: stage_entry(s.to_dict(), seconds, work.get(name))
        for name, (s, seconds) in stages.items()
    }
    used = [*work.values(), *(beside or [])]
    manifest = build_manifest(fingerprint, config, inputs, shards, entries, used)
    write_manifest(out_dir, manifest)
    return manifest
