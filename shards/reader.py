"""Read refinery's Arrow IPC files: work partitions, shards and the manifest's checksums."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from shards.ledger import ledger_files
from shards.manifest import manifest_path, read_manifest, shard_paths
from shards.storage import is_remote, open_file
from shards.tokens import split_dir, tokens_dir
from shards.workdir import crawl_dir, crawl_ledger
from shards.writer import sha256_file


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read an Arrow IPC file (optionally only `columns`, and from object storage only their
    bytes) into memory."""
    with open_file(path) as source:
        if columns is None or not is_remote(path):  # mapped: select without reading
            table = ipc.open_file(source).read_all()
            return table if columns is None else table.select(columns)
        names = ipc.open_file(source).schema.names
        fields = sorted(names.index(c) for c in columns)
        table = ipc.open_file(source, options=ipc.IpcReadOptions(included_fields=fields))
        return table.read_all().select(columns)


def read_schema(path: Path) -> pa.Schema:
    """The schema of an Arrow IPC file (its footer only is read)."""
    with open_file(path) as source:
        return ipc.open_file(source).schema


SORTED_BY = b"refinery.sorted_by"  # schema metadata of a table sorted by one uint64 column
BATCH_FIRSTS = b"refinery.batch_firsts"  # and the first value of each of its record batches
SORTED_ROWS = b"refinery.rows"


def sorted_rows(path: Path) -> int:
    """The number of rows of a `sorted_table` file (its footer only is read)."""
    with open_file(path) as source:
        return int(ipc.open_file(source).schema.metadata[SORTED_ROWS])


def sorted_table(table: pa.Table, column: str, batch_rows: int = 1 << 14) -> pa.Table:
    """`table` (sorted by the uint64 `column`) in record batches of `batch_rows`, with each
    batch's first value in its schema, so `read_key_range` reads only the batches a range
    needs."""
    batches = table.combine_chunks().to_batches(max_chunksize=batch_rows)
    firsts = np.array([b.column(column)[0].as_py() for b in batches if b.num_rows], np.uint64)
    meta = {SORTED_BY: column.encode(), BATCH_FIRSTS: firsts.tobytes().hex().encode(),
            SORTED_ROWS: str(table.num_rows).encode()}  # fmt: skip
    return pa.Table.from_batches(batches, table.schema).replace_schema_metadata(meta)


def key_range(index: int, ranges: int) -> tuple[int, int]:
    """Range `index` of `ranges` equal ranges of uint64 values: from `lo` up to `hi` (2**64
    for the last)."""
    return -(-index * 2**64 // ranges), -(-(index + 1) * 2**64 // ranges)


def read_key_range(path: Path, lo: int, hi: int, columns: list[str]) -> pa.Table:
    """The rows of a `sorted_table` file whose key is in [lo, hi) (hi up to 2**64), only
    `columns` (the key column among them): locally from the memory-mapped file, from object
    storage only the record batches the range overlaps."""
    with open_file(path) as source:
        reader = ipc.open_file(source)
        meta = reader.schema.metadata
        key = meta[SORTED_BY].decode()
        firsts = np.frombuffer(bytes.fromhex(meta[BATCH_FIRSTS].decode()), np.uint64)
        if is_remote(path):
            fields = sorted(reader.schema.names.index(c) for c in columns)
            options = ipc.IpcReadOptions(included_fields=fields)
            reader = ipc.open_file(source, options=options)
        # batch j holds keys from firsts[j] to firsts[j + 1] (both may repeat at its ends)
        first = max(0, int(np.searchsorted(firsts, np.uint64(lo), "left")) - 1)
        last = int(np.searchsorted(firsts, np.uint64(min(hi, 2**64 - 1)), "left"))
        if hi > 2**64 - 1:
            last = len(firsts)
        batches = [reader.get_batch(j) for j in range(first, last)]
    schema = reader.schema.remove_metadata()
    table = pa.Table.from_batches(batches, schema).select(columns) if batches else None
    if table is None or table.num_rows == 0:
        return pa.Table.from_batches([], schema).select(columns)
    keys = table.column(key).to_numpy()
    start = int(np.searchsorted(keys, np.uint64(lo), "left"))
    end = len(keys) if hi > 2**64 - 1 else int(np.searchsorted(keys, np.uint64(hi), "left"))
    return table.slice(start, end - start)


def read_frame(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Read an Arrow IPC file as a polars DataFrame."""
    return pl.from_arrow(read_table(path, columns))  # type: ignore[return-value]


def _checksum_problem(path: Path, sha256: str) -> str | None:
    """What is wrong with the file at `path` against its manifest's sha256, or None."""
    if not path.exists():
        return f"{path}: missing"
    if sha256_file(path) != sha256:
        return f"{path}: sha256 mismatch (file is corrupt or was modified)"
    return None


def verify_shards(out_dir: Path) -> list[str]:
    """Check every shard in the manifest against its sha256 and row count, and every token
    shard (`tokens/manifest.json`, when there is one) against its sha256.

    Returns:
        One message per problem, each naming the file (empty when the output is intact).
    """
    problems = []
    for shard in read_manifest(out_dir)["shards"]:
        path = out_dir / shard["path"]
        problem = _checksum_problem(path, shard["sha256"])
        if problem is None and read_table(path).num_rows != shard["rows"]:
            problem = f"{path}: expected {shard['rows']} rows"
        problems += [problem] if problem else []
    tokens = tokens_dir(out_dir)
    if manifest_path(tokens).is_file():
        for split, entry in json.loads(manifest_path(tokens).read_text())["splits"].items():
            for shard in entry["shards"]:
                path = split_dir(tokens, split) / shard["path"]
                problem = _checksum_problem(path, shard["sha256"])
                problems += [problem] if problem else []
    return problems


def read_shards(out_dir: Path, verify: bool = False) -> pl.DataFrame:
    """Read all shards listed in the manifest, in order, into one DataFrame.

    Args:
        out_dir: A finished `prepare` output.
        verify: Check each shard's sha256 against the manifest before reading it.

    Raises:
        ValueError: with `verify`, naming the first shard that is missing or corrupt.
    """
    shards = read_manifest(out_dir)["shards"]
    paths = shard_paths(out_dir, shards)
    for path, shard in zip(paths, shards, strict=True):
        if verify and (problem := _checksum_problem(path, shard["sha256"])) is not None:
            raise ValueError(problem)
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
    crawled = crawl_ledger(crawl_dir(out_dir))
    for path in [*ledger_files(out_dir), *([crawled] if crawled.exists() else [])]:
        rows = read_frame(path).filter(pl.col("doc_id") == doc_id).drop("text")
        hits += [{"where": "ledger", "file": str(path), **row} for row in rows.to_dicts()]
    for shard in read_manifest(out_dir)["shards"]:
        frame = read_frame(out_dir / shard["path"], ["doc_id", "source", "url"])
        rows = frame.with_row_index("row").filter(
            (pl.col("doc_id") == doc_id) | (pl.col("url") == doc_id)
        )
        hits += [{"where": "shard", "file": shard["path"], **row} for row in rows.to_dicts()]
    return hits
