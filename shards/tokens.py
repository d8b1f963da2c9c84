"""Token shards: packed, fixed-length training sequences as uncompressed Arrow IPC files.

Each row is one sequence of `row_len` token ids (a `fixed_size_list` of uint16 when the
vocabulary fits, else uint32). Files are uncompressed so that a reader can memory-map them
and hand out numpy views without copying. `tokens/manifest.json` lists each split's shards
with their sequence and token counts and sha256.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from shards.manifest import manifest_path
from shards.storage import open_file
from shards.writer import atomic_path, sha256_file, shard_name, write_json

SPLITS = ("train", "heldout")


def tokens_dir(out_dir: Path) -> Path:
    """The token shards' folder of an output directory (`manifest.json`, the tokenizer, and a
    folder per split)."""
    return out_dir / "tokens"


def tokenizer_path(root: Path) -> Path:
    """The tokenizer the token shards of `root` were encoded with."""
    return root / "tokenizer.json"


def split_dir(root: Path, split: str) -> Path:
    """The token shards of one split ("train" or "heldout") under `root`."""
    return root / split


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class TokenShardWriter:
    """Pack token streams into rows of `row_len` and write `part-{i:05d}.arrow` files.

    Args:
        out_dir: Directory of one split.
        row_len: Tokens per row.
        dtype: uint16 or uint32.
        pad_id: Fills the last row.
        rows_per_shard: Rows per file.
        labels: Names of labels written beside the tokens as columns `label_<name>` (uint16
            indices into names the manifest lists: language, source): per token, of the same
            shape as the tokens (the held-out split, for evaluation by slice), or with
            `per_row` one per row, the label of the row's middle token (the train split, for
            mixtures).
        per_row: Whether the labels are written per row rather than per token.
    """

    def __init__(self, out_dir: Path, row_len: int, dtype: np.dtype, pad_id: int,
                 rows_per_shard: int, labels: tuple[str, ...] = (),
                 per_row: bool = False) -> None:  # fmt: skip
        self.out_dir, self.row_len, self.dtype = out_dir, row_len, dtype
        self.pad_id, self.rows_per_shard, self.labels = pad_id, rows_per_shard, labels
        self.per_row = per_row
        self.shards: list[dict[str, Any]] = []
        self._buffer: list[np.ndarray] = []
        self._label_buffers: dict[str, list[np.ndarray]] = {name: [] for name in labels}
        self._buffered = 0
        self.tokens = 0  # real (non-padding) tokens written

    def __enter__(self) -> "TokenShardWriter":
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()

    def add(self, tokens: np.ndarray, labels: dict[str, np.ndarray] | None = None) -> None:
        """Append a stream of token ids (and each token's `labels`); full shards are written as
        they fill."""
        self._buffer.append(tokens.astype(self.dtype, copy=False))
        for name in self.labels:
            values = labels[name] if labels else np.zeros(len(tokens), np.uint16)
            self._label_buffers[name].append(values.astype(np.uint16, copy=False))
        self._buffered += len(tokens)
        self.tokens += len(tokens)
        while self._buffered >= self.row_len * self.rows_per_shard:
            self._write(self.rows_per_shard)

    def close(self) -> None:
        """Write what is left, padding the last row."""
        if self._buffered:
            rows = -(-self._buffered // self.row_len)
            pad = np.full(rows * self.row_len - self._buffered, self.pad_id, dtype=self.dtype)
            self.add(pad)
            self.tokens -= len(pad)
            self._write(rows)

    def _take(self, buffer: list[np.ndarray], n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        flat = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
        return flat[:n], [flat[n:]] if len(flat) > n else []

    def _write(self, rows: int) -> None:
        n = rows * self.row_len
        head, self._buffer = self._take(self._buffer, n)
        self._buffered -= n
        columns = {"tokens": pa.FixedSizeListArray.from_arrays(pa.array(head), self.row_len)}
        for name in self.labels:
            values, self._label_buffers[name] = self._take(self._label_buffers[name], n)
            if self.per_row:
                columns[f"label_{name}"] = pa.array(values[self.row_len // 2 :: self.row_len])
            else:
                columns[f"label_{name}"] = pa.FixedSizeListArray.from_arrays(values, self.row_len)
        table = pa.table(columns)
        name = shard_name(len(self.shards))
        with atomic_path(self.out_dir / name) as tmp:
            with ipc.new_file(tmp, table.schema) as w:
                w.write_table(table)
            size, sha256 = tmp.stat().st_size, sha256_file(tmp)
        self.shards.append({"path": name, "sequences": rows, "tokens": n, "bytes": size,
                            "sha256": sha256})  # fmt: skip


class TokenShards:
    """Memory-mapped sequences of one split, as numpy views (no copy).

    Args:
        root: The `tokens/` directory (holding `manifest.json`).
        split: "train" or "heldout".
        verify: Check each shard's sha256 against the manifest when opening it.
    """

    def __init__(self, root: Path, split: str, verify: bool = True) -> None:
        self.manifest = json.loads(manifest_path(root).read_text())
        self.row_len = self.manifest["seq_len"] + 1
        self.label_names: dict[str, list[str]] = self.manifest["splits"][split].get("labels", {})
        self._arrays: list[np.ndarray] = []
        self._labels: dict[str, list[np.ndarray]] = {name: [] for name in self.label_names}
        for shard in self.manifest["splits"][split]["shards"]:
            path = split_dir(root, split) / shard["path"]
            if verify and sha256_file(path) != shard["sha256"]:
                raise ValueError(f"{path}: sha256 mismatch (corrupt or modified token shard)")
            table = ipc.open_file(open_file(path)).read_all()
            self._arrays.extend(self._map(table.column("tokens")))
            for name, arrays in self._labels.items():
                column = table.column(f"label_{name}")
                if pa.types.is_fixed_size_list(column.type):  # per token
                    arrays.extend(self._map(column))
                else:  # per row
                    arrays.extend(chunk.to_numpy() for chunk in column.chunks)
        self._starts = np.cumsum([0] + [len(a) for a in self._arrays])

    def _map(self, column: pa.ChunkedArray) -> list[np.ndarray]:
        # `.values` are the flat ids, still backed by the mapped file: no copy is made.
        return [
            chunk.values.to_numpy(zero_copy_only=True).reshape(-1, self.row_len)
            for chunk in column.chunks
        ]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def row_labels(self, label: str) -> np.ndarray:
        """Every row's index of `label` (into `label_names[label]`), in row order."""
        arrays = self._labels[label]
        if arrays and arrays[0].ndim == 2:  # per token: the row's middle token's
            return np.concatenate([a[:, self.row_len // 2] for a in arrays])
        return np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)

    def gather(self, indices: np.ndarray, label: str | None = None) -> np.ndarray:
        """Rows at `indices` as one (len(indices), row_len) array: of tokens, or of the
        per-token indices of `label` into `label_names[label]`."""
        arrays = self._arrays if label is None else self._labels[label]
        shard = np.searchsorted(self._starts, indices, side="right") - 1
        return np.stack(
            [arrays[s][i - self._starts[s]] for s, i in zip(shard, indices, strict=True)]
        )

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive rows in batches of at most `batch_size`: views into the mapped files."""
        for array in self._arrays:
            for start in range(0, len(array), batch_size):
                yield array[start : start + batch_size]


def write_token_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write the token shards' manifest, their last file, atomically."""
    write_json(manifest, manifest_path(root))


def finished_tokens(root: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of token shards written with the same fingerprint, or None."""
    path = manifest_path(root)
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("fingerprint") == fingerprint else None
