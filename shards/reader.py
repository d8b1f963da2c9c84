"""Read refinery's Arrow IPC files: work partitions, shards and the manifest's checksums."""

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from shards.writer import sha256_file


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read an Arrow IPC file (optionally only `columns`) into memory."""
    with pa.memory_map(str(path)) as source:
        table = ipc.open_file(source).read_all()
    return table.select(columns) if columns is not None else table


def read_frame(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Read an Arrow IPC file as a polars DataFrame."""
    return pl.from_arrow(read_table(path, columns))  # type: ignore[return-value]


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """Load `<out_dir>/manifest.json`, raising FileNotFoundError with the path if missing."""
    path = out_dir / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"no manifest at {path}: is this a refinery output directory?")
    return json.loads(path.read_text())


def verify_shards(out_dir: Path) -> list[str]:
    """Check every shard in the manifest against its sha256 and row count.

    Returns:
        One message per problem (empty when the output is intact).
    """
    problems = []
    for shard in read_manifest(out_dir)["shards"]:
        path = out_dir / shard["path"]
        if not path.exists():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != shard["sha256"]:
            problems.append(f"{path}: sha256 mismatch (file is corrupt or was modified)")
        elif read_table(path).num_rows != shard["rows"]:
            problems.append(f"{path}: expected {shard['rows']} rows")
    return problems


def read_shards(out_dir: Path) -> pl.DataFrame:
    """Read all shards listed in the manifest, in order, into one DataFrame."""
    paths = [out_dir / s["path"] for s in read_manifest(out_dir)["shards"]]
    if not paths:
        return pl.DataFrame()
    return pl.concat([read_frame(p) for p in paths])


def find_document(out_dir: Path, doc_id: str) -> list[dict[str, Any]]:
    """Where `doc_id` ended: its ledger rows (stage, kind, reason, detail) and shard rows. A
    URL finds the crawl's ledger rows (keyed by URL) and the shard rows of that page.

    Returns:
        One dict per place the id was found, with `where` set to "ledger" or "shard".
    """
    hits: list[dict[str, Any]] = []
    ledgers = sorted((out_dir / "ledger").glob("*/part-*.arrow"))
    for path in [*ledgers, *sorted(out_dir.glob("crawl/ledger.arrow"))]:
        rows = read_frame(path).filter(pl.col("doc_id") == doc_id).drop("text")
        hits += [{"where": "ledger", "file": str(path), **row} for row in rows.to_dicts()]
    for shard in read_manifest(out_dir)["shards"]:
        frame = read_frame(out_dir / shard["path"], ["doc_id", "source", "url"])
        rows = frame.with_row_index("row").filter(
            (pl.col("doc_id") == doc_id) | (pl.col("url") == doc_id)
        )
        hits += [{"where": "shard", "file": shard["path"], **row} for row in rows.to_dicts()]
    return hits
