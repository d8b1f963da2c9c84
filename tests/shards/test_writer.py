import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from shards.manifest import check_balance
from shards.reader import read_table, verify_shards
from shards.schema import SHARD_SCHEMA
from shards.writer import ShardWriter, write_json
from tasks.output.write_shards import to_shard_table


def docs(n: int, start: int = 0) -> pa.Table:
    df = pl.DataFrame(
        {
            "doc_id": [f"d{i:04d}" for i in range(start, start + n)],
            "text": ["word " * 50] * n,
            "lang": ["en"] * n,
        }
    )
    return to_shard_table(df)


@pytest.mark.parametrize("size_limit", [1 << 12, 1 << 16, 1 << 30])
def test_shards_split_by_size_and_keep_order(tmp_path, size_limit):
    with ShardWriter(tmp_path, SHARD_SCHEMA, size_limit) as writer:
        writer.write(docs(300))
        writer.write(docs(200, start=300))
    names = [s["path"] for s in writer.shards]
    assert names == [f"part-{i:05d}.arrow" for i in range(len(names))]
    assert len(names) == 1 if size_limit == 1 << 30 else len(names) > 1
    ids = pl.concat([pl.read_ipc(tmp_path / n) for n in names])["doc_id"].to_list()
    assert ids == [f"d{i:04d}" for i in range(500)]
    assert sum(s["rows"] for s in writer.shards) == 500
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_shards_are_zstd_arrow_ipc_with_schema(tmp_path):
    with ShardWriter(tmp_path, SHARD_SCHEMA, 1 << 20) as writer:
        writer.write(docs(10))
    reader = ipc.open_file(tmp_path / "part-00000.arrow")
    assert reader.schema.equals(SHARD_SCHEMA)
    assert reader.schema.metadata[b"refinery.schema_version"] == b"5"
    assert read_table(tmp_path / "part-00000.arrow")["lang_score"].null_count == 10


def test_verify_reports_a_flipped_byte_with_the_path(tmp_path):
    with ShardWriter(tmp_path, SHARD_SCHEMA, 1 << 20) as writer:
        writer.write(docs(10))
    write_json({"shards": writer.shards}, tmp_path / "manifest.json")
    assert verify_shards(tmp_path) == []
    path = tmp_path / "part-00000.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    (problem,) = verify_shards(tmp_path)
    assert str(path) in problem and "sha256" in problem


def test_an_aborted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, SHARD_SCHEMA, 1 << 30) as writer:
        writer.write(docs(10))
        raise RuntimeError("disk gone")
    assert list(tmp_path.iterdir()) == []


def test_check_balance_names_the_stage():
    ok = {
        "a": {"in": 3, "kept": 2, "dropped": {"x": 1}, "quarantined": 0},
        "b": {"in": 2, "kept": 2, "dropped": {}, "quarantined": 0},
    }
    check_balance(ok)
    with pytest.raises(ValueError, match="'b'"):
        check_balance(ok | {"b": {"in": 1, "kept": 1, "dropped": {}, "quarantined": 0}})
    with pytest.raises(ValueError, match="'a'"):
        check_balance({"a": {"in": 3, "kept": 1, "dropped": {"x": 1}, "quarantined": 0}})
