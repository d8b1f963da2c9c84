"""Split input files: a run that cuts its files into byte ranges over many partitions keeps
the same documents, in the same shards byte for byte, as a run that reads each file whole."""

import gzip
import hashlib
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.config import load_config
from flows.prepare import prepare
from shards.ledger import ledger_files
from tasks.ingest.inputs import discover, plan_partitions
from tests.conftest import SAMPLE, english

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """An uncompressed JSONL file, a WARC of many gzip members and a Parquet file of many row
    groups, each several pieces long at the split run's sizes."""
    root = tmp_path_factory.mktemp("corpus")
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        wiki = [json.loads(line) for line in f]
    rows = [{"id": r["id"], "text": r["text"]} for r in wiki]
    rows += [{"id": f"en-{i}", "text": english(i, 150)} for i in range(200)]
    rows.insert(50, "{not json")  # quarantined, wherever the cuts fall
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    warc = b"".join((SAMPLE / "web" / f"dolma-sample-000{i}.warc.gz").read_bytes() for i in (0, 1))
    (root / "pages.warc.gz").write_bytes(warc)
    table = pa.table({"id": [f"pq-{i}" for i in range(300)],
                      "text": [english(i + 1000, 120) for i in range(300)]})  # fmt: skip
    pq.write_table(table, root / "more.parquet", row_group_size=20)
    return root


def run(corpus: Path, out: Path, sets: list[str]) -> dict:
    cfg = load_config(None, ["tokenize.vocab_size=512", "tokenize.seq_len=64", *sets], {})
    return prepare([str(corpus)], str(out), cfg)


def digests(out: Path) -> dict[str, str]:
    files = [*out.glob("part-*.arrow"), *out.glob("tokens/*/part-*.arrow")]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def ledger(out: Path) -> pl.DataFrame:
    rows = pl.concat([pl.read_ipc(p) for p in ledger_files(out)])
    return rows.select("doc_id", "stage", "reason", "source").sort(pl.all())


def test_split_files_give_the_documents_and_shards_of_whole_files(corpus, tmp_path):
    whole = run(corpus, tmp_path / "whole", ["ingest.partitions_per_worker=0"])
    split = run(corpus, tmp_path / "split", ["ingest.partition_bytes=40000",
                                             "ingest.min_piece_bytes=30000"])  # fmt: skip
    assert len(whole["inputs"]["partitions"]) == 1 and len(split["inputs"]["partitions"]) > 6
    plan = plan_partitions(discover([str(corpus)])[0], 40000, 1, 30000)
    cut = {Path(p.file.uri).name for part in plan for p in part.pieces if p.start > 0}
    assert cut == {"docs.jsonl", "pages.warc.gz", "more.parquet"}
    assert split["totals"] == whole["totals"] and whole["totals"]["quarantined"] >= 1
    assert digests(tmp_path / "split") == digests(tmp_path / "whole")
    assert ledger(tmp_path / "split").equals(ledger(tmp_path / "whole"))
