"""Shard writer: the kept documents, in input order, as Arrow IPC shards; plus the ledger.

In: the last stage's partitions. Out: `<out>/part-{i:05d}.arrow` (zstd, `SHARD_SCHEMA`) of about
`size_limit` bytes each, and `<out>/ledger/<stage>/part-{i:05d}.arrow` with every removed row.
A stage that did not run leaves its columns null.
"""

import os
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from prefect import task
from pydantic import BaseModel, Field

from shards import failpoints
from shards.manifest import build_manifest, stage_entry, write_manifest
from shards.reader import read_frame, read_manifest
from shards.schema import SHARD_SCHEMA
from shards.writer import ShardWriter, atomic_path
from tasks.partition import StageDir
from tasks.records import StageStats

STAGE = "shards"


class ShardsConfig(BaseModel, frozen=True, extra="forbid"):
    size_limit: int = Field(64 << 20, gt=0, description="target uncompressed bytes per shard")


def to_shard_table(df: pl.DataFrame) -> pa.Table:
    """Select and cast the shard columns, adding any that no stage produced as nulls."""
    missing = [pl.lit(None).alias(name) for name in SHARD_SCHEMA.names if name not in df.columns]
    return df.with_columns(missing).select(SHARD_SCHEMA.names).to_arrow().cast(SHARD_SCHEMA)


def remove_stale(directory: Path, pattern: str, keep: set[str]) -> None:
    """Delete files matching `pattern` in `directory` that a run no longer produces."""
    for path in directory.glob(pattern):
        if path.name not in keep:
            path.unlink()


@task(name="shards")
def write_shards(
    src: StageDir, parts: list[str], out_dir: Path, cfg: ShardsConfig, fingerprint: str
) -> tuple[list[dict[str, Any]], StageStats]:
    """Write the shards, unless a finished run with the same fingerprint already has."""
    if (done := finished_manifest(out_dir, fingerprint)) is not None:
        entry = done["stages"][STAGE]
        return done["shards"], StageStats(
            STAGE, entry["in"], entry["kept"], bytes_out=entry["bytes_out"]
        )
    (out_dir / "manifest.json").unlink(missing_ok=True)  # shards change: the old one is void
    start = time.perf_counter()
    with ShardWriter(out_dir, SHARD_SCHEMA, cfg.size_limit) as writer:
        for part in parts:
            writer.write(to_shard_table(read_frame(src.kept(part))))
    remove_stale(out_dir, "part-*.arrow", {s["path"] for s in writer.shards})
    rows = sum(s["rows"] for s in writer.shards)
    nbytes = sum(s["bytes"] for s in writer.shards)
    stats = StageStats(STAGE, rows, rows, bytes_out=nbytes, seconds=time.perf_counter() - start)
    return writer.shards, stats


def _link(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:  # another file system: copy instead
            tmp.write_bytes(src.read_bytes())


@task(name="ledger")
def publish_ledger(stages: list[StageDir], parts: list[str], out_dir: Path) -> None:
    """Expose each stage's removed rows as `<out>/ledger/<stage>/part-{i:05d}.arrow`."""
    ledger = out_dir / "ledger"
    for stage in stages:
        names = {f"part-{i:05d}.arrow": part for i, part in enumerate(parts)}
        for name, part in names.items():
            failpoints.hit("ledger-link")
            _link(stage.ledger(part), ledger / stage.stage / name)
        remove_stale(ledger / stage.stage, "part-*.arrow", set(names))
    for stale in ledger.glob("*/part-*.arrow"):
        if stale.parent.name not in {s.stage for s in stages}:
            stale.unlink()


def finished_manifest(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of a finished run with the same fingerprint, if its shards are all there."""
    try:
        manifest = read_manifest(out_dir)
    except FileNotFoundError:
        return None
    same = manifest.get("fingerprint") == fingerprint
    return (
        manifest
        if same and all((out_dir / s["path"]).exists() for s in manifest["shards"])
        else None
    )


@task(name="manifest")
def write_run_manifest(
    out_dir: Path,
    fingerprint: str,
    config: dict[str, Any],
    inputs: dict[str, Any],
    shards: list[dict[str, Any]],
    stages: dict[str, tuple[StageStats, float]],
    work: dict[str, str],
) -> dict[str, Any]:
    """Check that every stage balances and write `manifest.json`, the run's last file.
    `work` names each stage's work directory (what `refinery refilter` starts from)."""
    entries = {
        name: stage_entry(s.to_dict(), seconds, work.get(name))
        for name, (s, seconds) in stages.items()
    }
    manifest = build_manifest(fingerprint, config, inputs, shards, entries)
    write_manifest(out_dir, manifest)
    return manifest
