import polars as pl
import pytest

from shards.reader import read_frame
from shards.schema import DROPPED
from shards.workdir import StageDir
from shards.writer import write_table
from tasks.partition import done, keep_once, run_partition
from tasks.records import Rule, apply_rules, ledger_rows


def short_out(df: pl.DataFrame):
    return apply_rules(df, "short", [Rule("short_doc", pl.col("text").str.len_chars() < 3)])


@pytest.fixture
def dirs(tmp_path):
    src, out = StageDir("a", tmp_path / "a-0"), StageDir("short", tmp_path / "short-0")
    df = pl.DataFrame({"doc_id": ["x", "y", "z"], "text": ["hello", "hi", "world"]})
    write_table(df.to_arrow(), src.kept("p0"))
    return src, out


def test_run_partition_saves_once_and_counts(dirs):
    src, out = dirs
    stats = run_partition(src, out, "p0", short_out)
    assert (stats.n_in, stats.kept, stats.dropped, stats.bytes_in) == (3, 2, {"short_doc": 1}, 12)
    assert read_frame(out.kept("p0"))["doc_id"].to_list() == ["x", "z"]
    assert read_frame(out.ledger("p0"))["reason"].to_list() == ["short_doc"]
    assert done(out, "p0").to_dict() == stats.to_dict()
    again = run_partition(src, out, "p0", lambda df: pytest.fail("a done partition ran again"))
    assert again.to_dict() == stats.to_dict()


def test_run_partition_reads_and_counts_as_told(dirs):
    _, out = dirs
    records = pl.DataFrame({"doc_id": ["r1", "r2"], "text": ["abcd", "ef"]})
    stats = run_partition(None, out, "p1", short_out, read=lambda: records, bytes_in=1000)
    assert (stats.n_in, stats.kept, stats.bytes_in, stats.added) == (2, 1, 1000, 0)


def test_a_step_that_adds_documents_counts_them_in_and_added(dirs):
    src, out = dirs

    def add_two(df: pl.DataFrame):
        new = pl.DataFrame({"doc_id": ["n1", "n2"], "text": ["new one", "x"]})
        return short_out(pl.concat([df, new]))

    stats = run_partition(src, out, "p0", add_two, adds=True)
    assert (stats.n_in, stats.added, stats.kept, stats.bytes_in) == (5, 2, 3, 12)


def test_keep_once_computes_a_missing_result_only(tmp_path):
    calls = []

    def compute() -> pl.DataFrame:
        calls.append(1)
        return ledger_rows(pl.DataFrame({"doc_id": ["a"]}), "s", DROPPED, "why")

    path = tmp_path / "result.arrow"
    keep_once(path, compute)
    keep_once(path, compute)
    assert len(calls) == 1 and read_frame(path)["reason"].to_list() == ["why"]
