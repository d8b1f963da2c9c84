import json

import numpy as np
import pytest

from shards.tokens import TokenShards, TokenShardWriter, token_dtype, write_token_manifest


def write_split(root, streams, row_len=5, rows_per_shard=2, dtype=np.uint16):
    with TokenShardWriter(root / "train", row_len, np.dtype(dtype), 99, rows_per_shard) as w:
        for s in streams:
            w.add(np.asarray(s))
    split = {
        "shards": w.shards,
        "tokens": w.tokens,
        "sequences": sum(s["sequences"] for s in w.shards),
    }
    write_token_manifest(root, {"seq_len": row_len - 1, "splits": {"train": split}})
    return w


def test_packing_padding_and_zero_copy_reading(tmp_path):
    w = write_split(tmp_path, [range(7), range(100, 106)])
    assert w.tokens == 13
    assert [s["sequences"] for s in w.shards] == [2, 1]
    shards = TokenShards(tmp_path, "train")
    assert len(shards) == 3
    rows = shards.gather(np.array([0, 1, 2]))
    assert rows.tolist() == [[0, 1, 2, 3, 4], [5, 6, 100, 101, 102], [103, 104, 105, 99, 99]]
    first = next(shards.batches(2))
    assert first.dtype == np.uint16 and not first.flags.owndata  # a view of the mapped file


def test_a_flipped_byte_is_reported_with_the_path(tmp_path):
    write_split(tmp_path, [range(20)])
    path = tmp_path / "train" / "part-00000.arrow"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"part-00000\.arrow: sha256 mismatch"):
        TokenShards(tmp_path, "train")


def test_dtype_follows_the_vocabulary():
    assert token_dtype(50_000) == np.uint16
    assert token_dtype(70_000) == np.uint32


def test_token_dir_fixture_is_consistent(token_dir):
    manifest = json.loads((token_dir / "manifest.json").read_text())
    train = TokenShards(token_dir, "train")
    assert len(train) == manifest["splits"]["train"]["sequences"] > 100
    assert train.gather(np.arange(len(train))).max() < manifest["vocab_size"]
    assert manifest["splits"]["heldout"]["documents"] > 0
