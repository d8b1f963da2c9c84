"""Exports read back with the trainers' own readers: megatron-core and Hugging Face datasets."""

import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows.cli import main
from flows.config import load_config
from flows.prepare import prepare
from shards.reader import read_shards
from shards.tokens import TokenShards
from shards.writer import sha256_file
from tasks.output.export import export

pytestmark = pytest.mark.usefixtures("prefect_server")

SETS = ["ingest.partition_bytes=200000", "shards.size_limit=200000", "tokenize.vocab_size=512",
        "tokenize.seq_len=64", "tokenize.heldout_fraction=0.1",
        "export.formats=[megatron, hf]"]  # fmt: skip


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    from tests.conftest import SAMPLE

    root = tmp_path_factory.mktemp("export")
    (root / "corpus").mkdir()
    for name in ("wiki.jsonl.gz", "junk.jsonl", "udhr.jsonl.gz"):
        (root / "corpus" / name).write_bytes((SAMPLE / name).read_bytes())
    prepare(inputs=[str(root / "corpus")], output=str(root / "out"), config=load_config(sets=SETS))
    return root / "out"


def unpadded(shards: TokenShards, pad: int) -> np.ndarray:
    flat = np.concatenate([shards.gather(np.array([i]))[0] for i in range(len(shards))])
    end = len(flat)
    while end and flat[end - 1] == pad:
        end -= 1
    return flat[:end]


def test_megatron_export_reads_back_with_megatron_core(output):
    with warnings.catch_warnings():  # no Transformer Engine or Apex here
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    manifest = json.loads((output / "export" / "megatron" / "manifest.json").read_text())
    tokens = json.loads((output / "tokens" / "manifest.json").read_text())
    eod, pad = tokens["special_tokens"]["<|endoftext|>"], tokens["special_tokens"]["<|pad|>"]
    for split in ("train", "heldout"):
        dataset = IndexedDataset(str(output / "export" / "megatron" / f"{split}_text_document"))
        entries = [dataset[i] for i in range(len(dataset))]
        assert len(entries) == manifest["splits"][split]["documents"] > 0
        assert all(e[-1] == eod and eod not in e[:-1] for e in entries)  # one document each
        assert list(dataset.document_indices) == list(range(len(entries) + 1))
        # Joined, the documents are the token shards of the split without their padding.
        joined = np.concatenate(entries)
        assert np.array_equal(joined, unpadded(TokenShards(output / "tokens", split), pad))
        assert manifest["splits"][split]["tokens"] == len(joined)
        for f in manifest["splits"][split]["files"]:
            assert sha256_file(output / "export" / "megatron" / f["path"]) == f["sha256"]


def test_hf_export_reads_back_with_datasets(output):
    import datasets

    export_dir = output / "export" / "hf"
    loaded = datasets.load_from_disk(str(export_dir))
    shards = read_shards(output)
    assert set(loaded) == {"train", "heldout"}
    both = pl.concat([loaded[s].to_polars() for s in ("train", "heldout")])
    assert both.height == shards.height  # no rewrites here: every kept document is in a split
    assert sorted(both["doc_id"]) == sorted(shards["doc_id"])
    # Every column, with its types and values.
    assert loaded["train"].column_names == shards.columns
    assert loaded["train"].features["lang_top"] == datasets.List(
        {"lang": datasets.Value("string"), "score": datasets.Value("float32")}
    )
    ordered = both.sort("doc_id")
    expected = shards.sort("doc_id")
    for column in ("text", "lang", "lang_score", "source", "q_gopher_words"):
        assert ordered[column].to_list() == expected[column].to_list(), column
    # The held-out split holds the documents the token shards hold out.
    tokens = json.loads((output / "tokens" / "manifest.json").read_text())
    assert loaded["heldout"].num_rows == tokens["splits"]["heldout"]["documents"]


def test_export_is_skipped_when_done_and_redone_for_a_new_output(output, tmp_path, capsys):
    manifest = output / "export" / "hf" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    assert main(["export", "--output", str(output), "--format", "hf"]) == 0
    assert manifest.stat().st_mtime_ns == before
    assert "hf export at" in capsys.readouterr().out
    # Elsewhere, and again after the output changes (its fingerprint).
    elsewhere = export(output, "megatron", tmp_path / "exports")
    assert (tmp_path / "exports" / "megatron" / "train_text_document.idx").exists()
    data = json.loads((output / "manifest.json").read_text())
    (output / "manifest.json").write_text(json.dumps({**data, "fingerprint": "changed"}))
    try:
        again = export(output, "megatron", tmp_path / "exports")
    finally:
        (output / "manifest.json").write_text(json.dumps(data))
    assert again["source_fingerprint"] == "changed" != elsewhere["source_fingerprint"]
    assert again["splits"] == elsewhere["splits"]


def test_a_mixture_at_export_draws_train_documents_by_weight(output, tmp_path):
    import datasets

    mixture = {"lang": {"en": 3.0, "zh": 1.0, "*": 0.0}}  # en three times as often as zh
    manifest = export(output, "hf", tmp_path, mixture)
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    train = loaded["train"].to_polars()
    plain = datasets.load_from_disk(str(output / "export" / "hf"))["train"].to_polars()
    assert train.height == plain.height  # as many draws as train documents
    shares = train["lang"].value_counts(normalize=True)
    share = dict(zip(shares["lang"], shares["proportion"], strict=True))
    assert set(share) == {"en", "zh"}
    assert share["en"] == pytest.approx(0.75, abs=0.01)
    groups = manifest["mixture"]["groups"]
    assert groups["en"]["drawn"] == train.filter(pl.col("lang") == "en").height
    assert groups["en"]["passes"] > 1 and groups["de"]["drawn"] == 0
    # The held-out split is not mixed; a second export with the same weights is skipped.
    assert loaded["heldout"].num_rows == datasets.load_from_disk(
        str(output / "export" / "hf"))["heldout"].num_rows  # fmt: skip
    assert export(output, "hf", tmp_path, mixture) == manifest
    again = export(output, "megatron", tmp_path, mixture)
    assert again["splits"]["train"]["documents"] == train.height


def test_export_mixture_from_a_file_and_bad_ones_in_one_line(output, tmp_path, capsys):
    (tmp_path / "mix.yaml").write_text("lang:\n  en: 1.0\n")
    run = ["export", "--output", str(output), "--format", "hf", "--to", str(tmp_path / "x")]
    assert main([*run, "--mixture", str(tmp_path / "mix.yaml")]) == 0
    summary = json.loads((tmp_path / "x" / "hf" / "manifest.json").read_text())["mixture"]
    assert summary["by"] == "lang" and summary["groups"]["en"]["weight"] == 1.0
    capsys.readouterr()
    for bad, says in [("{lang: 3}", "invalid config value for export.mixture.lang"),
                      ("{genre: {news: 1}}", "the shards have no column 'genre'")]:  # fmt: skip
        assert main([*run, "--mixture", bad]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("refinery: error:") and says in line
