"""Files at fsspec URLs: the same writes and reads as on a local disk, each object whole."""

import hashlib
import itertools
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from upath import UPath

from shards.reader import read_key_range, read_table, sorted_rows, sorted_table
from shards.storage import StorageError, check_writable, is_remote, location
from shards.writer import ShardWriter, atomic_path, write_json, write_table


@pytest.fixture
def root() -> Path:
    """A fresh folder on fsspec's in-memory file system."""
    return location(f"memory://refinery-test-{uuid.uuid4().hex[:8]}")


def test_location_is_a_path_locally_and_a_upath_at_a_url(tmp_path):
    assert type(location(str(tmp_path))) is type(tmp_path)
    assert location(f"file://{tmp_path}") == tmp_path
    remote = location("memory://bucket/run")
    assert isinstance(remote, UPath) and is_remote(remote) and str(remote / "x").endswith("run/x")
    assert not is_remote(tmp_path)


def test_an_unknown_protocol_is_named():
    with pytest.raises(StorageError, match="nosuchstore://"):
        location("nosuchstore://bucket/run")


def test_tables_round_trip_and_columns_are_selected(root):
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]})
    write_table(table, root / "work" / "t.arrow", compression="lz4")
    assert read_table(root / "work" / "t.arrow").equals(table)
    assert read_table(root / "work" / "t.arrow", ["c", "a"]).equals(table.select(["c", "a"]))
    write_json({"k": 1}, root / "m.json")
    assert (root / "m.json").read_text() == '{\n  "k": 1\n}\n'


def test_a_failed_write_leaves_no_object(root):
    with pytest.raises(RuntimeError), atomic_path(root / "half.arrow") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not (root / "half.arrow").exists()


def test_shard_checksums_match_the_objects(root):
    table = pa.table({"text": [f"document {i} " * 20 for i in range(3000)]})
    with ShardWriter(root, table.schema, size_limit=20_000) as writer:
        writer.write(table)
    assert len(writer.shards) > 1
    for shard in writer.shards:
        data = (root / shard["path"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest() and shard["bytes"] == len(data)


def test_check_writable_names_an_output_it_cannot_write(root, tmp_path):
    check_writable(root)
    assert root.fs.find(root.path) == []  # the probe is gone
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match=str(tmp_path / "file" / "out")):
        check_writable(tmp_path / "file" / "out")


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_key_range_of_a_sorted_file_is_read_alone(where, tmp_path, root):
    rng = np.random.default_rng(0)
    keys = np.sort(np.concatenate([rng.integers(0, 2**64, 5000, dtype=np.uint64),
                                   np.full(300, 2**63, np.uint64)]))  # fmt: skip
    table = sorted_table(pa.table({"key": keys, "row": np.arange(len(keys))}), "key", 256)
    path = (tmp_path if where == "local" else root) / "sorted.arrow"
    write_table(table, path, compression=None)
    assert sorted_rows(path) == len(keys)
    bounds = [0, 2**62, 2**63, 2**63 + 1, 2**64 - 5, 2**64]  # a repeated key spans batches
    for lo, hi in itertools.pairwise(bounds):
        found = read_key_range(path, lo, hi, ["key", "row"]).column("row").to_numpy()
        expected = np.flatnonzero((keys >= np.uint64(lo)) & (keys <= np.uint64(hi - 1)))
        assert np.array_equal(found, expected), (lo, hi)
