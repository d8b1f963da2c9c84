"""The augment stage through the prepare flow, with tiny random-weight models on disk."""

import gzip
import json

import polars as pl
import pytest

from flows.config import load_config
from flows.prepare import prepare
from shards.reader import read_manifest, read_shards
from tests.conftest import SAMPLE, write_jsonl
from tests.tiny_seq2seq import build_byt5, build_marian

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        en = [r for r in map(json.loads, f) if r["id"].startswith("xquad-en")][:24]
    (root / "corpus").mkdir()
    write_jsonl(root / "corpus" / "wiki.jsonl", [{"id": r["id"], "text": r["text"]} for r in en])
    words = [r["text"] for r in en]
    models = {
        "a": build_marian(root / "opus-tiny-en-de", words, seed=0),
        "b": build_marian(root / "opus-tiny-de-en", words, seed=1),
        "t5": build_byt5(root / "byt5-tiny"),
    }
    return root, models


def run(root, out, sets):
    base = ["minhash.enabled=false", "ingest.partition_bytes=8000", "augment.enabled=true",
            "augment.max_new_tokens=12", "augment.batch_docs=5",
            "tokenize.vocab_size=400"]  # fmt: skip
    cfg = load_config(sets=[*base, *sets])
    return prepare(inputs=[str(root / "corpus")], output=str(out), config=cfg)


def test_backtranslation_adds_documents_with_provenance(setup, tmp_path):
    root, models = setup
    sets = ["augment.backend=backtranslate", f"augment.model_a={models['a']}",
            f"augment.model_b={models['b']}", "augment.min_chrf=0", "quality.enabled=false",
            "augment.fraction=0.5", "augment.seed=1"]  # fmt: skip
    manifest = run(root, tmp_path, sets)
    stage = manifest["stages"]["augment"]
    assert 4 <= stage["added"] <= 20  # a seeded half of the 24
    assert stage["in"] == manifest["stages"]["langid"]["kept"] + stage["added"]
    t = manifest["totals"]
    assert t["documents"] + t["added"] == t["kept"] + t["dropped"] + t["quarantined"]
    shards = read_shards(tmp_path)
    new = shards.filter(pl.col("augmented_from").is_not_null())
    assert new.height == stage["new_kept"] == t["augmented"] > 0
    assert set(new["augment_method"]) == {"backtranslate"}
    assert set(new["augment_model"]) == {"opus-tiny-en-de+opus-tiny-de-en"}
    assert new["doc_id"].str.ends_with("~backtranslate0").all()
    sources = shards.filter(pl.col("augmented_from").is_null()).select("doc_id", "text")
    pairs = new.join(sources, left_on="augmented_from", right_on="doc_id", suffix="_source")
    assert pairs.height == new.height and (pairs["text"] != pairs["text_source"]).all()
    assert new["augment_chrf"].is_not_null().all() and new["lang"].is_not_null().all()
    scores = stage["scores"]
    assert 0 <= scores["kept_bleu"] < 100 and 0 < scores["kept_chrf_mean"] < 100
    assert set(scores) == {"generated_bleu", "generated_chrf_mean", "kept_bleu", "kept_chrf_mean"}
    tokens = read_manifest(tmp_path / "tokens")
    assert "rewrites_of_heldout_skipped" in tokens

    again = run(root, tmp_path, sets)  # resumes: nothing is generated again
    assert again["stages"]["augment"] == {**stage, "seconds": again["stages"]["augment"]["seconds"]}

    banded = run(root, tmp_path, sets[:3] + sets[4:])  # the default band: word salad drifts
    dropped = banded["stages"]["augment"]["dropped"]
    assert dropped.get("augment_drift", 0) >= banded["stages"]["augment"]["added"] - 1
    assert banded["totals"]["augmented"] <= 1


def test_paraphrase_with_a_byt5_model(setup, tmp_path):
    root, models = setup
    sets = ["augment.backend=paraphrase", f"augment.model={models['t5']}",
            "augment.prefix='paraphrase: '", "augment.min_chrf=0", "quality.enabled=false",
            "augment.max_new_docs=3", "augment.variants=2", "langid.enabled=false"]  # fmt: skip
    manifest = run(root, tmp_path, sets)
    assert manifest["stages"]["augment"]["added"] == 2  # max_new_docs 3 // 2 variants = 1 source
    new = read_shards(tmp_path).filter(pl.col("augmented_from").is_not_null())
    assert set(new["augment_method"]) <= {"paraphrase"}
    assert set(new["augment_model"]) <= {"byt5-tiny"}
