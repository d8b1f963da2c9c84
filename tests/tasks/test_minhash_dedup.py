import csv

import numpy as np
import polars as pl
import pytest
from datasketch import LeanMinHash, MinHash

from tasks.minhash_dedup import MinhashConfig, find_clusters, hash_shingle, shingles, signatures
from tests.conftest import DATA, SAMPLE

CFG = MinhashConfig()


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog by the river",
        "短い",
        "今天天气很好，我们去公园散步吧。",
    ],
)
def test_signatures_equal_datasketch(text):
    ours = signatures([text], CFG)[0]
    theirs = MinHash(num_perm=CFG.num_perm, seed=CFG.seed, hashfunc=hash_shingle)
    theirs.update_batch(shingles(text, CFG.ngram, CFG.char_ngram))
    assert np.array_equal(ours, theirs.hashvalues)
    lean = LeanMinHash(seed=CFG.seed, hashvalues=ours, scheme="affine32")
    assert lean.jaccard(LeanMinHash(theirs)) == 1.0


def test_cjk_uses_character_ngrams():
    grams = shingles("今天天气很好", 5, 2)
    assert b"\xe4\xbb\x8a\xe5\xa4\xa9" in grams  # "今天"


def keys(texts: dict[str, str]) -> pl.DataFrame:
    sigs = signatures(list(texts.values()), CFG)
    return pl.DataFrame(
        {
            "doc_id": list(texts),
            "signature": sigs.tolist(),
            "part": "p0",
            "row": list(range(len(texts))),
        },
    )


def essays() -> dict[str, str]:
    paths = sorted((SAMPLE / "essays").glob("*.txt"))
    return {p.name: p.read_bytes().decode("utf-8", "replace") for p in paths}


def jaccard(a: str, b: str) -> float:
    sa, sb = (
        set(shingles(a, CFG.ngram, CFG.char_ngram)),
        set(shingles(b, CFG.ngram, CFG.char_ngram)),
    )
    return len(sa & sb) / len(sa | sb)


def test_clusters_match_the_labelled_copies():
    """Clough-Stevenson: answers that copy their task's source are found, independent ones not."""
    texts = essays()
    names = sorted(texts)
    dropped = find_clusters(keys({n: texts[n] for n in names}), CFG)
    cluster = {n: n for n in names}
    for row, keeper in dropped.select("row", "duplicate_of").iter_rows():
        cluster[names[row]] = keeper
    with open(DATA / "clough-stevenson-labels.csv") as f:
        labels = [r for r in csv.DictReader(f) if r["Category"] != "orig"]
    checked = {"near": 0, "far": 0}
    for r in labels:
        source = f"orig_task{r['Task']}.txt"
        similarity = jaccard(texts[r["File"]], texts[source])
        if similarity >= 0.85:
            assert cluster[r["File"]] == cluster[source], r
            checked["near"] += 1
        if r["Category"] == "non":
            assert cluster[r["File"]] != cluster[source], r
            checked["far"] += 1
    assert checked["near"] >= 2 and checked["far"] >= 30


def test_deterministic_whatever_the_order():
    texts = essays()
    forward = find_clusters(keys(texts), MinhashConfig(threshold=0.5))
    reverse = find_clusters(keys(dict(reversed(list(texts.items())))), MinhashConfig(threshold=0.5))
    assert set(forward["duplicate_of"]) == set(reverse["duplicate_of"])
    assert forward.height == reverse.height
