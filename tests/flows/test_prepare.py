"""The prepare flow end to end, in process, under one temporary Prefect server."""

import itertools
import json
from pathlib import Path

import polars as pl
import pyarrow.ipc as ipc
import pytest

from flows.config import load_config
from flows.prepare import prepare
from shards.reader import read_shards, verify_shards
from shards.schema import SHARD_SCHEMA

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = ["ingest.partition_bytes=2000", "shards.size_limit=20000"]


def run(corpus: Path, out: Path, sets: list[str] = ()) -> dict:
    return prepare(inputs=[str(corpus)], output=str(out), config=load_config(sets=[*SMALL, *sets]))


def ledger(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_ipc(p) for p in sorted((out / "ledger").glob("*/part-*.arrow"))])


def test_every_document_is_accounted_for(mixed_corpus, tmp_path):
    out = tmp_path / "out"
    manifest = run(mixed_corpus, out)
    stages = manifest["stages"]
    assert list(stages) == [
        "ingest",
        "url_filter",
        "normalize",
        "exact_dedup",
        "minhash",
        "langid",
        "quality",
        "shards",
        "tokenize",
    ]
    names = list(stages)
    for before, after in itertools.pairwise(names):
        assert stages[before]["kept"] == stages[after]["in"]
    for s in stages.values():
        assert s["in"] == s["kept"] + sum(s["dropped"].values()) + s["quarantined"]
    assert stages["ingest"]["quarantined_reasons"] == {"ingest_unreadable": 1}
    assert stages["normalize"]["quarantined_reasons"] == {
        "normalize_empty": 1,
        "normalize_undecodable": 1,
    }
    assert stages["exact_dedup"]["dropped"] == {"exact_dedup_duplicate": 1}
    assert stages["minhash"]["dropped"] == {"minhash_duplicate": 1}

    # The ledger and shards together hold every input record exactly once.
    removed = ledger(out)
    kept = read_shards(out)
    assert removed.height + kept.height == stages["ingest"]["in"]
    assert set(removed["doc_id"]).isdisjoint(kept["doc_id"])
    dup = removed.filter(pl.col("reason") == "exact_dedup_duplicate").row(0, named=True)
    assert {dup["doc_id"], dup["detail"]} == {"copy-0", "xquad-en-003"}
    assert verify_shards(out) == []
    assert json.loads((out / "manifest.json").read_text())["totals"]["kept"] == kept.height


def test_shards_are_readable_by_polars_and_pyarrow(mixed_corpus, tmp_path):
    out = tmp_path / "out"
    manifest = run(mixed_corpus, out)
    first = out / manifest["shards"][0]["path"]
    assert ipc.open_file(first).schema.equals(SHARD_SCHEMA)
    df = pl.read_ipc(first)
    assert {"doc_id", "text", "lang", "lang_score", "source"} <= set(df.columns)
    assert df["lang"].drop_nulls().len() == df.height


def test_rerun_skips_finished_work_and_config_change_reruns_from_that_stage(mixed_corpus, tmp_path):
    out = tmp_path / "out"
    run(mixed_corpus, out)
    shard_bytes = {p.name: p.read_bytes() for p in out.glob("part-*.arrow")}
    markers = {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/*.stats.json")}

    run(mixed_corpus, out)
    assert {p: p.stat().st_mtime_ns for p in markers} == markers  # nothing recomputed
    assert {p.name: p.read_bytes() for p in out.glob("part-*.arrow")} == shard_bytes

    run(mixed_corpus, out, ["langid.min_score=0.5"])
    stage_dirs = sorted(d.name.rsplit("-", 1)[0] for d in (out / "work").iterdir())
    for stage in ("ingest", "url_filter", "normalize", "exact_dedup", "minhash"):
        assert stage_dirs.count(stage) == 1, stage  # reused
    for stage in ("langid", "quality"):
        assert stage_dirs.count(stage) == 2, stage  # re-run with the new config


def test_disabled_stages_leave_their_columns_null(mixed_corpus, tmp_path):
    out = tmp_path / "out"
    sets = ["langid.enabled=false", "quality.enabled=false", "minhash.enabled=false"]
    sets.append("url_filter.enabled=false")
    manifest = run(mixed_corpus, out, sets)
    assert list(manifest["stages"]) == ["ingest", "normalize", "exact_dedup", "shards", "tokenize"]
    shards = read_shards(out)
    assert shards["lang"].null_count() == shards.height
