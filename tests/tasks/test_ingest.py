import gzip
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.ingest import ingest as ing
from tasks.ingest import inputs
from tests.conftest import SAMPLE, write_jsonl

CFG = ing.IngestConfig()


def read(*paths: Path) -> ing.StageResult:
    files, _ = inputs.discover([str(p) for p in paths])
    return ing.read_partition(tuple(files), CFG)


def reasons(result: ing.StageResult) -> dict[str, str]:
    return dict(result.removed.select("reason", "detail").iter_rows())


def test_jsonl_ids_and_derived_ids(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": 7, "text": "x"}, {"text": "y"}])
    kept = read(path).kept
    second = path.read_bytes().index(b"\n") + 1  # the offset: the byte where the line starts
    assert kept["doc_id"][0] == "7"
    assert kept["doc_id"][1] == ing.derived_id("a.jsonl", second)
    assert kept["source"][1].endswith(f"a.jsonl:{second}")
    assert read(path).kept["doc_id"].to_list() == kept["doc_id"].to_list()  # stable


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_compressions(tmp_path, suffix):
    data = b'{"id": "a", "text": "hello"}\n{"id": "b", "text": "world"}\n'
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif suffix.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    (tmp_path / f"x{suffix}").write_bytes(data)
    assert read(tmp_path / f"x{suffix}").kept["text"].to_list() == ["hello", "world"]


def test_bad_records_are_quarantined_with_reasons(tmp_path):
    rows = [
        '{"id": "bad", "text": "unterminated',
        "[1, 2]",
        {"id": "nt"},
        {"id": "num", "text": 5},
        {"id": "null", "text": None},
        {"id": "ok", "text": "fine"},
    ]
    result = read(write_jsonl(tmp_path / "j.jsonl", rows))
    assert result.kept["doc_id"].to_list() == ["ok"]
    got = dict(result.removed.group_by("reason").len().rows())
    assert got == {ing.BAD_JSON: 1, ing.NOT_AN_OBJECT: 1, ing.MISSING_TEXT: 2, ing.BAD_TEXT_TYPE: 1}
    assert (result.removed["kind"] == "quarantined").all()
    detail = reasons(result)[ing.BAD_JSON]
    assert "j.jsonl:0: " in detail


def test_truncated_gzip_keeps_good_lines_and_quarantines_the_rest():
    result = read(SAMPLE / "broken.jsonl.gz")
    assert result.kept.height >= 2
    assert list(reasons(result)) == [ing.UNREADABLE]
    assert "broken.jsonl.gz" in reasons(result)[ing.UNREADABLE]


def test_invalid_utf8_text_is_kept_as_raw_bytes(tmp_path):
    (tmp_path / "w.txt").write_bytes("naïve".encode("cp1252"))
    kept = read(tmp_path / "w.txt").kept
    assert kept["text"][0] is None and kept["raw"][0] == "naïve".encode("cp1252")


def test_parquet_rows_and_wrong_schema(tmp_path):
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["one", "two"]}), tmp_path / "ok.parquet")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "wrong.parquet")
    result = read(tmp_path)
    assert result.kept["doc_id"].to_list() == ["p1", "p2"]
    assert list(reasons(result)) == [ing.BAD_SCHEMA]


def test_warc_pages_become_documents():
    result = read(SAMPLE / "web")
    kept = result.kept
    assert kept.height > 20
    assert kept["url"].str.starts_with("http").all()
    assert kept["doc_id"].str.starts_with("urn:uuid:").all()
    assert kept.filter(pl.col("text").str.len_chars() > 200).height > 10
    cc_page = kept.filter(pl.col("url").str.contains("wikipedia"))
    assert cc_page.height == 2  # the same Common Crawl page as a WARC response and a WET record
    assert cc_page["title"].null_count() == 1  # WET records have no title


def test_discover_directories_globs_and_missing(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "b.jsonl", [{"text": "b"}])
    (tmp_path / "README.md").write_text("not data")
    files, ignored = inputs.discover([str(tmp_path)])
    assert [f.name for f in files] == [f"{tmp_path.name}/a.jsonl", f"{tmp_path.name}/sub/b.jsonl"]
    assert ignored and ignored[0].endswith("README.md")
    files, _ = inputs.discover([str(tmp_path / "*.jsonl")])
    assert len(files) == 1
    with pytest.raises(FileNotFoundError, match=r"input not found: .*nope"):
        inputs.discover([str(tmp_path / "nope")])


def test_plan_partitions_groups_files_by_size():
    files = [inputs.InputFile(f"f{i}", f"f{i}", 100, "") for i in range(5)]
    parts = inputs.plan_partitions(files, 250)
    assert [len(p.pieces) for p in parts] == [2, 2, 1]
    assert [p.name for p in parts] == ["p00000", "p00001", "p00002"]


def test_sample_corpus_accounts_for_every_record():
    result = read(SAMPLE)
    stats = result.stats("ingest", result.kept.height + result.removed.height, 0, 0.0)
    assert stats.kept > 1000
    assert set(stats.quarantined) == {
        ing.BAD_JSON,
        ing.MISSING_TEXT,
        ing.BAD_TEXT_TYPE,
        ing.UNREADABLE,
    }
