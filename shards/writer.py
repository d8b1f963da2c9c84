"""Atomic Arrow IPC writes and the size-limited shard writer.

Nothing refinery writes is ever visible half-written: a local file goes to a temporary name in
the same directory and is renamed into place (an atomic operation on POSIX file systems); an
object (`shards.storage`) is written locally first and put whole, in one request.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from shards import failpoints
from shards.storage import is_remote

_IPC_OPTIONS = {codec: ipc.IpcWriteOptions(compression=codec) for codec in ("zstd", "lz4", None)}
SHARD_GLOB = "part-*.arrow"  # every `shard_name`
BATCH_ROWS = 256  # rows per record batch of a shard (the size limit is checked per batch)


def shard_name(index: int) -> str:
    """The `index`-th file of a folder of shards: the text shards, a stage's ledger files, or
    a split's token shards."""
    return f"part-{index:05d}.arrow"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary local path; it becomes `path` only if the block succeeds: renamed
    when `path` is local, put as one object when it is on object storage."""
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="refinery-") as folder:
            tmp = Path(folder) / path.name
            yield tmp
            failpoints.hit("atomic-rename", path)
            path.fs.put_file(str(tmp), path.path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        failpoints.hit("atomic-rename", path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temp_files(root: Path) -> int:
    """Delete the temporary files a killed run left under `root`; return how many (none on
    object storage, where an object is only ever put whole)."""
    if is_remote(root):
        return 0
    stale = [p for p in root.rglob(".*.tmp-*") if p.is_file()] if root.exists() else []
    for path in stale:
        path.unlink()
    return len(stale)


def write_table(
    table: pa.Table, path: Path, compression: Literal["zstd", "lz4"] | None = "zstd"
) -> None:
    """Write `table` to `path` as an Arrow IPC file, atomically.

    zstd is for files that are kept; lz4 writes about four times as fast, for work files
    read once or twice; uncompressed files can be memory-mapped without copying.
    """
    with atomic_path(path) as tmp:
        write_ipc(table, tmp, compression, path)


def write_ipc(
    table: pa.Table, tmp: Path, compression: Literal["zstd", "lz4"] | None, path: Path
) -> None:
    """Write `table` to `tmp`, the local temporary file `atomic_path` gave for `path`."""
    with ipc.new_file(tmp, table.schema, options=_IPC_OPTIONS[compression]) as w:
        failpoints.hit("arrow-body", path)
        w.write_table(table)


def write_json(obj: Any, path: Path) -> None:
    """Write `obj` as indented JSON to `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Write tables into `part-{i:05d}.arrow` files of about `size_limit` bytes each.

    A new shard starts once the current one holds `size_limit` bytes of (uncompressed) Arrow
    data. Each shard is written atomically when it is full; `shards` lists what was written
    (file, rows, bytes, sha256) for the manifest.

    Args:
        out_dir: Directory to write shards into.
        schema: Schema every shard is cast to.
        size_limit: Target uncompressed bytes per shard.
    """

    def __init__(self, out_dir: Path, schema: pa.Schema, size_limit: int) -> None:
        if size_limit <= 0:
            raise ValueError(f"`size_limit` must be positive, got {size_limit}")
        self.out_dir, self.schema, self.size_limit = out_dir, schema, size_limit
        self.shards: list[dict[str, Any]] = []
        self._pending: list[pa.RecordBatch] = []
        self._carry = schema.empty_table()  # rows not yet in a full batch
        self._pending_bytes = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._add(self._carry)
            self._flush()

    def write(self, table: pa.Table) -> None:
        """Append `table`'s rows, in order, starting new shards as they fill. Record batches
        hold `BATCH_ROWS` rows whatever the tables given, so the shards' bytes depend on the
        rows alone, not on how they were cut into partitions."""
        self._carry = pa.concat_tables(
            [self._carry, table.select(self.schema.names).cast(self.schema)]
        )
        while self._carry.num_rows >= BATCH_ROWS:
            self._add(self._carry.slice(0, BATCH_ROWS))
            self._carry = self._carry.slice(BATCH_ROWS)

    def _add(self, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        # A gather copies the rows into buffers of their own: a slice would write the whole
        # buffers it views, so the bytes would depend on the tables the rows came in.
        batch = rows.take(np.arange(rows.num_rows)).combine_chunks().to_batches()[0]
        over = self._pending_bytes + batch.nbytes > self.size_limit > self._pending_bytes
        if over and rows.num_rows > 1:  # end the shard near its limit: halves of the batch
            half = rows.num_rows // 2
            self._add(rows.slice(0, half))
            self._add(rows.slice(half))
            return
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        failpoints.hit("shard-batch")
        if self._pending_bytes >= self.size_limit:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = shard_name(len(self.shards))
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        with atomic_path(self.out_dir / name) as tmp:
            write_ipc(table, tmp, "zstd", self.out_dir / name)
            size, sha256 = tmp.stat().st_size, sha256_file(tmp)
        self.shards.append({"path": name, "rows": table.num_rows, "bytes": size, "sha256": sha256})
        self._pending, self._pending_bytes = [], 0
