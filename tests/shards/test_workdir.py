import hashlib
import json
from pathlib import Path

import pyarrow as pa

from shards.schema import SCHEMA_VERSION
from shards.workdir import StageDir, crawl_dir, crawl_ledger, crawl_summary, fingerprint, work_dir


def test_work_files_keep_their_names():
    """A run resumes from the files an earlier run wrote, so their names must not change."""
    work = StageDir("minhash", Path("out") / "work" / "minhash-0123456789ab")
    files = {
        work.kept("p00000"): "p00000.arrow",
        work.ledger("p00000"): "p00000.ledger.arrow",
        work.marker("p00000"): "p00000.stats.json",
        work.keys("p00000"): "p00000.keys.arrow",
        work.duplicates: "duplicates.arrow",
        work.components_range(2, 8): "components-002-of-008.arrow",
        work.duplicates_range(2, 8): "duplicates-002-of-008.arrow",
        work.selection: "selection.arrow",
        work.batch("p00000", 3): "p00000.batch-00003.arrow",
        work.near_duplicates: "near_duplicates.arrow",
        work.variants.kept("p00000"): "p00000.variants.arrow",
        work.variants.ledger("p00000"): "p00000.variants.ledger.arrow",
        work.variants.marker("p00000"): "p00000.variants.stats.json",
    }
    assert {path.name: name for path, name in files.items()} == {n: n for n in files.values()}
    assert {path.parent for path in files} == {work.path}
    assert work.fingerprint == "0123456789ab" and work.variants.stage == "minhash"
    assert work_dir(Path("out")) == Path("out") / "work" and crawl_dir(Path("out")) == Path(
        "out/crawl"
    )
    assert crawl_ledger(Path("c")).name == "ledger.arrow" and crawl_summary(Path("c")).name == (
        "crawl.json"
    )


def test_fingerprint_hashes_stage_config_upstream_and_schema():
    """Work directories of earlier runs are found by their fingerprint."""
    blob = {"stage": "normalize", "config": {"a": 1}, "upstream": "abc", "schema": SCHEMA_VERSION}
    expected = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]
    assert fingerprint("normalize", {"a": 1}, "abc") == expected
    work = StageDir.of(Path("w"), "normalize", {"a": 1}, "abc")
    assert work == StageDir("normalize", Path(f"w/normalize-{expected}"))
    assert StageDir.named(Path("w"), "normalize", f"normalize-{expected}") == work


def test_a_partition_is_done_once_its_stats_are_written(tmp_path):
    work = StageDir("langid", tmp_path / "langid-0")
    assert work.read_stats("p0") is None
    table = pa.table({"doc_id": ["a"]})
    work.write_partition("p0", table, table.slice(0, 0), {"n_in": 1, "kept": 1})
    assert work.read_stats("p0") == {"n_in": 1, "kept": 1}
    assert pa.ipc.open_file(work.kept("p0")).read_all().equals(table)
    assert work.batches("p0") == []
