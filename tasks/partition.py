"""Where a stage's work lives on disk, and how a partition is skipped once it is done.

Each stage writes into `<stage>-<fingerprint>` in the output's `work` folder, where the
fingerprint hashes the stage's config and its upstream stage's fingerprint: changing one
stage's config gives it (and every stage after it) a fresh directory, while the stages
before it are found done. Per partition a stage writes `<part>.arrow` (kept rows),
`<part>.ledger.arrow` (removed rows) and, last, `<part>.stats.json`: the stats file is the
completion marker, so a partition killed half way is simply computed again.
"""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shards import failpoints
from shards.reader import read_frame
from shards.schema import SCHEMA_VERSION
from shards.writer import write_json, write_table
from tasks.records import StageResult, StageStats, text_bytes


def fingerprint(stage: str, config: dict[str, Any], upstream: str) -> str:
    """A short, stable hash of a stage's name, config and upstream fingerprint."""
    blob = json.dumps(
        {"stage": stage, "config": config, "upstream": upstream, "schema": SCHEMA_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class StageDir:
    """The work directory of one stage run: `<work>/<stage>-<fingerprint>/`."""

    stage: str
    path: Path

    @classmethod
    def of(cls, work: Path, stage: str, config: dict[str, Any], upstream: str) -> "StageDir":
        return cls(stage, work / f"{stage}-{fingerprint(stage, config, upstream)}")

    @property
    def fingerprint(self) -> str:
        return self.path.name.rsplit("-", 1)[1]

    def kept(self, part: str) -> Path:
        return self.path / f"{part}.arrow"

    def ledger(self, part: str) -> Path:
        return self.path / f"{part}.ledger.arrow"

    def keys(self, part: str) -> Path:
        return self.path / f"{part}.keys.arrow"

    @property
    def duplicates(self) -> Path:
        """The rows a dedup stage drops (`part`, `row`, `duplicate_of`), found over all parts."""
        return self.path / "duplicates.arrow"

    def all_keys(self, parts: list[str]) -> pl.DataFrame:
        """Every partition's keys file, with its partition name and row number."""
        return pl.concat(
            [
                read_frame(self.keys(p)).with_row_index("row").with_columns(part=pl.lit(p))
                for p in parts
            ]
        )

    def done(self, part: str) -> StageStats | None:
        """The stats of a finished partition, or None if it must be (re)computed."""
        path = self.path / f"{part}.stats.json"
        return StageStats.from_dict(json.loads(path.read_text())) if path.exists() else None

    def save(self, part: str, result: StageResult, stats: StageStats) -> StageStats:
        """Write kept rows (lz4: a work file), ledger rows, then the stats marker, each
        atomically."""
        write_table(result.kept.to_arrow(), self.kept(part), compression="lz4")
        write_table(result.removed.to_arrow(), self.ledger(part))
        failpoints.hit("partition-stats")
        write_json(stats.to_dict(), self.path / f"{part}.stats.json")
        return stats


def run_partition(
    src: StageDir, out: StageDir, part: str, fn: Callable[[pl.DataFrame], StageResult]
) -> StageStats:
    """Apply `fn` to partition `part` of `src` and save it under `out`, unless already done."""
    if (stats := out.done(part)) is not None:
        return stats
    df = read_frame(src.kept(part))
    start = time.perf_counter()
    result = fn(df)
    stats = result.stats(out.stage, df.height, text_bytes(df), time.perf_counter() - start)
    return out.save(part, result, stats)
