"""Where a run's work lives on disk: each stage's work directory and every file in it.

An output directory holds the shards and `manifest.json` (`shards.manifest`), the ledger
(`shards.ledger`), the token shards (`shards.tokens`), the report, and two folders of work:

- `crawl/` (`crawl_dir`): a crawl's state and WARC files, `ledger.arrow` (every refused or
  failed URL) and `crawl.json` (its stats).
- `work/` (`work_dir`): one `<stage>-<fingerprint>` directory per stage run (`StageDir`). The
  fingerprint hashes the stage's config and its upstream stage's fingerprint: changing one
  stage's config gives it (and every stage after it) a fresh directory, while the stages
  before it are found done.

Per partition a stage writes `<part>.arrow` (kept rows), `<part>.ledger.arrow` (removed rows)
and, last, `<part>.stats.json`: the stats file is the completion marker, so a partition killed
half way is simply computed again. With `runner.keep_work: false` a stage's rows (and a dedup
stage's keys) are released once the next stage has finished with them: its ledger and stats
stay, and a later run that needs the rows again computes them again (`ReleasedRows`). A step
of a stage with partition files of its own (augment's vetted variants) writes them as
`<part>.<step>.arrow`, `<part>.<step>.ledger.arrow` and `<part>.<step>.stats.json`. Results of
the whole run sit beside them (`duplicates.arrow`, ...).
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from shards import failpoints
from shards.schema import SCHEMA_VERSION
from shards.storage import is_remote
from shards.writer import write_json, write_table


def fingerprint(stage: str, config: dict[str, Any], upstream: str) -> str:
    """A short, stable hash of a stage's name, config and upstream fingerprint."""
    blob = json.dumps(
        {"stage": stage, "config": config, "upstream": upstream, "schema": SCHEMA_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def work_dir(out_dir: Path) -> Path:
    """The folder of the stages' work directories in an output directory."""
    return out_dir / "work"


def unused_work(out_dir: Path, in_use: set[str]) -> list[tuple[Path, int]]:
    """The work directories of `out_dir` not named in `in_use` (those of earlier configs, and
    any a removal left half done), each with its size in bytes, largest first."""
    root = work_dir(out_dir)
    if not root.exists():
        return []
    found = [d for d in root.iterdir() if d.is_dir() and d.name not in in_use]
    sized = [(d, sum(f.stat().st_size for f in d.rglob("*") if f.is_file())) for d in found]
    return sorted(sized, key=lambda item: (-item[1], item[0].name))


def remove_work(path: Path) -> None:
    """Remove a work directory. A local one is first renamed to a hidden name that no stage
    looks for, so a removal cut short never leaves a stage directory half there."""
    if is_remote(path):  # objects: a prefix removed object by object
        path.fs.rm(path.path, recursive=True)
        return
    hidden = path if path.name.startswith(".") else path.with_name(f".removing-{path.name}")
    if hidden != path:
        os.replace(path, hidden)
    shutil.rmtree(hidden)


class ReleasedRows(FileNotFoundError):
    """A finished partition's rows were released (`StageDir.release`) and are needed again."""

    def __init__(self, stage_dir: str, part: str) -> None:
        super().__init__(stage_dir, part)
        self.stage_dir, self.part = stage_dir, part

    def __str__(self) -> str:
        return f"{self.stage_dir}: the rows of {self.part} were released (runner.keep_work)"


def crawl_dir(out_dir: Path) -> Path:
    """Where `prepare` crawls to, in an output directory."""
    return out_dir / "crawl"


def crawl_ledger(crawl: Path) -> Path:
    """Every URL the crawl in `crawl` refused (dropped) or failed on (quarantined)."""
    return crawl / "ledger.arrow"


def crawl_summary(crawl: Path) -> Path:
    """A crawl's stats, requests and WARC files, in crawl directory `crawl`."""
    return crawl / "crawl.json"


def crawl_state(crawl: Path) -> Path:
    """A crawl's SQLite state: frontier, fetched set, robots.txt cache, WARC bookkeeping."""
    return crawl / "state.sqlite"


def crawl_warc_dir(crawl: Path) -> Path:
    """The folder of a crawl's WARC files."""
    return crawl / "warc"


def crawl_warc(crawl: Path, n: int) -> Path:
    """WARC file `n` of a crawl; it is written as `<name>.part` and renamed when full."""
    return crawl_warc_dir(crawl) / f"crawl-{n:05d}.warc.gz"


def crawl_warcs(crawl: Path) -> list[Path]:
    """A crawl's finished WARC files, in order."""
    return sorted(crawl_warc_dir(crawl).glob("crawl-*.warc.gz"))


def report_file(out_dir: Path, name: str, kind: str) -> Path:
    """A file of the run report: `kind` is "png" for a plot, "html" for the page."""
    return report_dir(out_dir) / f"{name}.{kind}"


def report_dir(out_dir: Path) -> Path:
    """The run report's folder (`index.html` and its plots) in an output directory."""
    return out_dir / "report"


@dataclass(frozen=True)
class StageDir:
    """The work directory of one stage run: `<work>/<stage>-<fingerprint>/`.

    Args:
        stage: The stage's name.
        path: The directory.
        step: Set on the view of a step with partition files of its own (see `variants`).
    """

    stage: str
    path: Path
    step: str = ""

    @classmethod
    def of(cls, work: Path, stage: str, config: dict[str, Any], upstream: str) -> "StageDir":
        """The directory of `stage` run with `config` after the stage `upstream` names."""
        return cls(stage, work / f"{stage}-{fingerprint(stage, config, upstream)}")

    @classmethod
    def named(cls, work: Path, stage: str, name: str) -> "StageDir":
        """The directory `name` (as a run's manifest lists it) of `stage` under `work`."""
        return cls(stage, work / name)

    @property
    def fingerprint(self) -> str:
        return self.path.name.rsplit("-", 1)[1]

    def _file(self, part: str, suffix: str) -> Path:
        return self.path / (f"{part}.{self.step}{suffix}" if self.step else f"{part}{suffix}")

    def kept(self, part: str) -> Path:
        """The rows partition `part` kept (lz4: a work file)."""
        return self._file(part, ".arrow")

    def ledger(self, part: str) -> Path:
        """The rows partition `part` removed (ledger rows)."""
        return self._file(part, ".ledger.arrow")

    def marker(self, part: str) -> Path:
        """Partition `part`'s stats, written last: the partition is done once it exists."""
        return self._file(part, ".stats.json")

    def keys(self, part: str) -> Path:
        """Per-row keys of partition `part` for a dedup stage's reduce (content hashes, or
        MinHash signatures and band keys, uncompressed so they can be memory-mapped)."""
        return self._file(part, ".keys.arrow")

    def bands(self, part: str) -> Path:
        """MinHash's LSH band keys of partition `part`: one entry (key, band, row, doc_key)
        per document and band, sorted by key, so any hash range is one slice of it."""
        return self._file(part, ".bands.arrow")

    def duplicates_range(self, index: int, ranges: int) -> Path:
        """The duplicates found in hash range `index` of `ranges` (`duplicates` joins them)."""
        return self.path / f"duplicates-{index:03d}-of-{ranges:03d}.arrow"

    @property
    def duplicates(self) -> Path:
        """The rows a dedup stage drops (`part`, `row`, `duplicate_of`), found over all parts."""
        return self.path / "duplicates.arrow"

    def components_range(self, index: int, ranges: int) -> Path:
        """MinHash's component map of hash range `index` of `ranges` (`ref`, `label`)."""
        return self.path / f"components-{index:03d}-of-{ranges:03d}.arrow"

    @property
    def index(self) -> Path:
        """An evaluation set's n-gram index (`evalset-<key>/`: sorted 64-bit hashes)."""
        return self.path / "index.arrow"

    @property
    def selection(self) -> Path:
        """The documents augment rewrites (doc_id, part), chosen over the whole run."""
        return self.path / "selection.arrow"

    def batch(self, part: str, index: int) -> Path:
        """Augment's rewrites of the `index`-th batch of partition `part`'s chosen documents."""
        return self.path / f"{part}.batch-{index:05d}.arrow"

    def batches(self, part: str) -> list[Path]:
        """The rewrite batches of partition `part` written so far, in order."""
        return sorted(self.path.glob(f"{part}.batch-*.arrow"))

    @property
    def variants(self) -> "StageDir":
        """Augment's vetted rewrites: kept ones as `kept`, rejected ones as `ledger`."""
        return replace(self, step="variants")

    @property
    def near_duplicates(self) -> Path:
        """Augment's new documents that near-duplicate a kept one (doc_id, duplicate_of)."""
        return self.path / "near_duplicates.arrow"

    def read_stats(self, part: str) -> dict[str, Any] | None:
        """The saved stats of a finished partition, or None if it must be (re)computed."""
        path = self.marker(part)
        return json.loads(path.read_text()) if path.exists() else None

    def released(self, parts: list[str]) -> list[str]:
        """The partitions of `parts` that are finished but whose rows are gone."""
        return [p for p in parts if not self.kept(p).exists() and self.marker(p).exists()]

    def release(self, parts: list[str]) -> None:
        """Delete the rows of `parts` and the per-partition and per-range keys of a dedup
        stage: what the next stages no longer read once they have finished. The ledger, the
        stats and the run's duplicates stay."""
        for part in parts:
            for path in (self.kept(part), self.keys(part), self.bands(part)):
                path.unlink(missing_ok=True)
        for pattern in ("duplicates-*-of-*.arrow", "components-*-of-*.arrow"):
            for path in self.path.glob(pattern):
                path.unlink(missing_ok=True)

    def forget(self, parts: list[str]) -> None:
        """Make `parts` to be computed again: their completion markers go."""
        for part in parts:
            self.marker(part).unlink(missing_ok=True)

    def write_partition(
        self, part: str, kept: pa.Table, removed: pa.Table, stats: dict[str, Any]
    ) -> None:
        """Write kept rows (lz4: a work file), ledger rows, then the stats marker, each
        atomically."""
        write_table(kept, self.kept(part), compression="lz4")
        write_table(removed, self.ledger(part))
        failpoints.hit("partition-stats")
        write_json(stats, self.marker(part))
