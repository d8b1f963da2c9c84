import collections
import random

import polars as pl

from shards.workdir import StageDir
from shards.writer import write_table
from tasks.dedup.exact_dedup import (
    DUPLICATE,
    by_digest,
    content_keys,
    find_duplicates,
    group_range,
    join_ranges,
)
from tasks.records import drop_duplicates


def keys_for(parts: dict[str, list[tuple[str, str]]]) -> pl.DataFrame:
    frames = []
    for part, docs in parts.items():
        df = pl.DataFrame({"doc_id": [d for d, _ in docs], "text": [t for _, t in docs]})
        frames.append(content_keys(df).with_row_index("row").with_columns(part=pl.lit(part)))
    return pl.concat(frames)


def test_keeps_smallest_doc_id_whatever_the_partitioning():
    docs = [("c", "same"), ("a", "same"), ("b", "other"), ("d", "same")]
    one = find_duplicates(keys_for({"p0": docs}))
    split = find_duplicates(keys_for({"p0": docs[:2], "p1": docs[2:]}))
    for found in (one, split):
        assert set(found["duplicate_of"].drop_nulls()) == {"a"}
        assert found["duplicate_of"].null_count() == 1  # the kept row, with the group's size
        assert found["cluster_size"].to_list() == [3, 3, 3]


def test_drop_duplicates_records_duplicate_of():
    df = pl.DataFrame({"doc_id": ["x", "y", "z"], "text": ["t", "t", "u"]})
    dups = find_duplicates(keys_for({"p": list(zip(df["doc_id"], df["text"], strict=True))}))
    result = drop_duplicates(df, dups.drop("part"), "exact_dedup", DUPLICATE)
    assert result.kept["doc_id"].to_list() == ["x", "z"]
    assert result.kept["cluster_size"].to_list() == [2, 1]
    row = result.removed.row(0, named=True)
    assert (row["doc_id"], row["reason"], row["detail"]) == ("y", DUPLICATE, "x")


def test_any_number_of_hash_ranges_finds_the_same_duplicates(tmp_path):
    rng = random.Random(0)
    texts = [f"text {i}" for i in range(40)]
    parts = {f"p{p}": [(f"d{p}-{i}", rng.choice(texts)) for i in range(30)] for p in range(5)}
    counts = collections.Counter(t for docs in parts.values() for _, t in docs)
    groups = sum(1 for n in counts.values() if n > 1)
    written = {}
    for ranges in (1, 3, 8):
        out = StageDir("exact_dedup", tmp_path / f"k{ranges}")
        for part, docs in parts.items():
            df = pl.DataFrame({"doc_id": [d for d, _ in docs], "text": [t for _, t in docs]})
            write_table(by_digest(content_keys(df).to_arrow()), out.keys(part))
        for index in range(ranges):
            group_range.fn(out, list(parts), index, ranges)
        join_ranges.fn(out, ranges)
        written[ranges] = out.duplicates.read_bytes()
        found = pl.read_ipc(out.duplicates)
        assert found.height == sum(n for n in counts.values() if n > 1)
        assert found["duplicate_of"].null_count() == groups  # one kept row per group
    assert written[1] == written[3] == written[8]
