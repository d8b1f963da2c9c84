import csv
import gzip
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from datasketch import LeanMinHash, MinHash

from shards.workdir import StageDir
from shards.writer import write_table
from tasks.dedup import minhash_dedup as minhash_dedup_module
from tasks.dedup.minhash_cluster import (
    bucket_pairs,
    connected_components,
    make_refs,
    mapped_matrix,
    query_pairs,
    unique_pairs,
)
from tasks.dedup.minhash_dedup import (
    ClusterInputs,
    MinhashConfig,
    bucket_range,
    cluster_ranges,
    merge_components,
    minhash_dedup,
    sign_partitions,
)
from tasks.dedup.minhash_sketch import hash_shingle, shingles, signatures
from tasks.filter.langid import LangIdConfig
from tests.conftest import DATA, SAMPLE

CFG = MinhashConfig()
TEXTS = [
    "The quick brown fox jumps over the lazy dog by the river",
    "Hello, world — ça va? Naïve café, «quoted» and 3.14159!",
    "two words",
    "短い",
    "今天天气很好，我们去公园散步吧。",
    "東京は日本の首都です。English words inside, too.",
    "ทีมกีฬามืออาชีพในแคลิฟอเนียใต้ประกอบด้วยทีมจากหลายลีก",
    "!!! ... ???",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_signatures_equal_datasketch(text):
    ours = signatures([text], CFG.num_perm, CFG.seed, CFG.ngram, CFG.char_ngram)[0]
    theirs = MinHash(num_perm=CFG.num_perm, seed=CFG.seed, hashfunc=hash_shingle)
    for shingle in shingles(text, CFG.ngram, CFG.char_ngram):
        theirs.update(shingle)
    assert np.array_equal(ours, theirs.hashvalues)
    lean = LeanMinHash(seed=CFG.seed, hashvalues=ours, scheme="affine32")
    assert lean.jaccard(LeanMinHash(theirs)) == 1.0


def test_documents_longer_than_a_block_keep_a_running_minimum(monkeypatch):
    """A document with more shingles than a block is folded block by block, not held whole."""
    monkeypatch.setattr("tasks.dedup.minhash_sketch._CHUNK", 64)
    long = " ".join(f"w{i % 500} z{i % 7}" for i in range(2000))
    ours = signatures([long, TEXTS[0]], CFG.num_perm, CFG.seed, CFG.ngram, CFG.char_ngram)
    for text, row in zip([long, TEXTS[0]], ours, strict=True):
        theirs = MinHash(num_perm=CFG.num_perm, seed=CFG.seed, hashfunc=hash_shingle)
        theirs.update_batch(shingles(text, CFG.ngram, CFG.char_ngram))
        assert np.array_equal(row, theirs.hashvalues)


def test_batch_signatures_equal_one_at_a_time():
    batch = signatures(TEXTS, 64, 7, 4, 2)
    for text, row in zip(TEXTS, batch, strict=True):
        assert np.array_equal(row, signatures([text], 64, 7, 4, 2)[0])


def test_unspaced_scripts_use_character_shingles():
    assert shingles("今天天气很好", 5, 2)[0] == ("今", "天")
    thai = shingles("ทีมกีฬามืออาชีพ", 5, 3)
    assert ("ท", "ี", "ม") in thai and all(len(s) == 3 and len(s[0]) == 1 for s in thai)
    assert shingles("Ça va, Mr. Smith? Yes!", 2, 2) == [
        ("mr", "smith"), ("smith", "yes"), ("va", "mr"), ("ça", "va"),
    ]  # fmt: skip


def test_bucket_pairs_join_each_member_to_the_anchor():
    keys = np.array([5, 7, 5, 5, 9, 7], np.uint64)
    doc_keys = np.array([30, 1, 10, 20, 0, 2], np.uint64)
    refs = make_refs(0, 6)
    pairs = {tuple(p) for p in bucket_pairs(keys, doc_keys, refs).tolist()}
    assert pairs == {(2, 0), (2, 3), (1, 5)}


def test_query_pairs_join_each_query_to_every_member_of_its_buckets():
    keys = np.array([[5, 1], [7, 1], [5, 2], [5, 3], [9, 3], [7, 4]], np.uint64)  # 2 bands
    pairs = {tuple(p) for p in query_pairs(keys, np.array([2, 4])).tolist()}
    assert pairs == {(2, 0), (2, 3), (4, 3)}
    assert query_pairs(keys, np.array([], np.int64)).shape == (0, 2)


def test_signatures_are_memory_mapped_not_copied(tmp_path):
    sigs = np.arange(4000 * 128, dtype=np.uint32).reshape(4000, 128)
    column = pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel()), 128)
    write_table(pa.table({"signature": column}), tmp_path / "k.arrow", compression=None)
    before = pa.total_allocated_bytes()
    mapped = mapped_matrix(tmp_path / "k.arrow", "signature")
    assert np.array_equal(mapped, sigs)
    assert pa.total_allocated_bytes() - before < sigs.nbytes // 10


def test_connected_components_label_by_smallest_member():
    pairs = np.array([[5, 9], [9, 12], [1, 3], [12, 20]], np.uint64)
    nodes, labels = connected_components(pairs)
    assert dict(zip(nodes.tolist(), labels.tolist(), strict=True)) == {
        1: 1, 3: 1, 5: 5, 9: 5, 12: 5, 20: 5,
    }  # fmt: skip


def run_minhash(parts: list[pl.DataFrame], root: Path, cfg: MinhashConfig = CFG, ranges: int = 2):
    """The four steps over `parts` (frames of doc_id, text), the bucket step in `ranges` hash
    ranges; returns kept rows and ledger."""
    src, out = StageDir("normalize", root / "src"), StageDir("minhash", root / "out")
    names = [f"p{i:03d}" for i in range(len(parts))]
    for name, frame in zip(names, parts, strict=True):
        write_table(frame.to_arrow(), src.kept(name))
    for name in names:
        sign_partitions.fn([name], src, out, cfg)
    at = ClusterInputs(src, out, names, LangIdConfig())
    for index in range(ranges):
        bucket_range.fn(at, index, ranges, cfg)
    cluster_ranges.fn(at, ranges, cfg)
    stats = [minhash_dedup.fn([name], src, out) for name in names]
    kept = pl.concat([pl.read_ipc(out.kept(n)) for n in names])
    removed = pl.concat([pl.read_ipc(out.ledger(n)) for n in names])
    assert sum(s.n_in for s in stats) == sum(p.height for p in parts)
    return kept, removed


def split(frame: pl.DataFrame, n: int) -> list[pl.DataFrame]:
    return [frame[i::n] for i in range(n)]


def essays() -> pl.DataFrame:
    paths = sorted((SAMPLE / "essays").glob("*.txt"))
    return pl.DataFrame(
        {
            "doc_id": [p.name for p in paths],
            "text": [p.read_bytes().decode("utf-8", "replace") for p in paths],
        }
    )


def jaccard(a: str, b: str, n: int = CFG.ngram) -> float:
    sa, sb = set(shingles(a, n, n)), set(shingles(b, n, n))
    return len(sa & sb) / len(sa | sb)


def cluster_of(kept: pl.DataFrame, removed: pl.DataFrame) -> dict[str, str]:
    """Each document's cluster, named by its kept document."""
    cluster = {d: d for d in kept["doc_id"]}
    cluster |= dict(removed.select("doc_id", "detail").iter_rows())
    return cluster


def test_clough_stevenson_copies_found_and_independent_answers_left_alone(tmp_path):
    docs = essays()
    kept, removed = run_minhash([docs], tmp_path)
    cluster = cluster_of(kept, removed)
    text = dict(docs.iter_rows())
    with open(DATA / "clough-stevenson-labels.csv") as f:
        labels = [r for r in csv.DictReader(f) if r["Category"] != "orig"]
    found = far = 0
    for r in labels:
        source = f"orig_task{r['Task']}.txt"
        if r["Category"] == "cut" and jaccard(text[r["File"]], text[source]) >= 0.55:
            assert cluster[r["File"]] == cluster[source], r
            found += 1
        if r["Category"] == "non":
            assert cluster[r["File"]] != cluster[source], r
            far += 1
    assert found >= 4 and far >= 30
    assert set(removed["reason"]) == {"minhash_duplicate"}
    assert removed["detail"].is_in(kept["doc_id"].implode()).all()  # duplicate_of is kept


def wiki() -> pl.DataFrame:
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    return pl.DataFrame({"doc_id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})


def test_translations_are_never_duplicates(tmp_path):
    """xquad-<lang>-NNN are translations of one paragraph; 038 is mostly shared team names."""
    docs = wiki().filter(pl.col("doc_id").str.starts_with("xquad-"))
    assert docs.filter(pl.col("doc_id").str.ends_with("-038")).height >= 10
    kept, removed = run_minhash([docs], tmp_path)
    assert removed.height == 0 and kept.height == docs.height
    # Without the language check, the translations of the list of team names are joined.
    blind = run_minhash([docs], tmp_path / "blind", MinhashConfig(same_language=False))[1]
    assert blind.height > 0 and blind["doc_id"].str.ends_with("-038").all()


def edit_words(text: str, rate: float, rng: random.Random, unit: str = "word") -> str:
    """Replace, delete or insert about `rate` of the words (or characters)."""
    tokens = text.split() if unit == "word" else list(text)
    out = []
    for tok in tokens:
        r = rng.random()
        if r < rate / 3:
            continue  # delete
        out.append(rng.choice(tokens) if r < 2 * rate / 3 else tok)  # replace
        if r > 1 - rate / 3:
            out.append(rng.choice(tokens))  # insert
    return (" " if unit == "word" else "").join(out)


def corpus_with_copies(seed: int = 0) -> tuple[pl.DataFrame, dict[str, str]]:
    """Sample paragraphs in three scripts plus edited copies (up to 10 %); copy -> source."""
    rng = random.Random(seed)
    base = wiki().filter(pl.col("doc_id").str.contains(r"^(xquad-en|cmrc|jsquad|xquad-zh)"))
    rows, truth = list(base.iter_rows()), {}
    for doc_id, text in list(rows)[::3]:
        unit = "word" if doc_id.startswith("xquad-en") else "char"
        copy_id = f"copy-of-{doc_id}"
        rows.append((copy_id, edit_words(text, rng.uniform(0.01, 0.1), rng, unit)))
        truth[copy_id] = doc_id
    return pl.DataFrame(rows, schema=["doc_id", "text"], orient="row"), truth


def test_edited_copies_in_english_chinese_and_japanese_are_found(tmp_path):
    docs, truth = corpus_with_copies()
    kept, removed = run_minhash([docs], tmp_path)
    cluster = cluster_of(kept, removed)
    missed = [c for c, s in truth.items() if cluster[c] != cluster[s]]
    assert len(missed) <= len(truth) // 20, missed  # recall >= 95 %
    copies = set(truth) | set(truth.values())
    wrong = removed.filter(~pl.col("doc_id").is_in(list(copies)))
    assert wrong.height == 0, wrong.select("doc_id", "detail")
    assert any(s.startswith("cmrc") for s in truth.values())
    assert any(s.startswith("jsquad") for s in truth.values())


def test_same_answer_whatever_the_order_and_partitioning(tmp_path):
    docs, _ = corpus_with_copies(seed=1)
    kept1, removed1 = run_minhash([docs], tmp_path / "one")
    shuffled = docs.sample(fraction=1.0, shuffle=True, seed=3)
    kept4, removed4 = run_minhash(split(shuffled, 4), tmp_path / "four")
    assert removed1.height > 10
    assert sorted(kept1["doc_id"]) == sorted(kept4["doc_id"])
    pairs = lambda r: sorted(r.select("doc_id", "detail").iter_rows())  # noqa: E731
    assert pairs(removed1) == pairs(removed4)


def test_cluster_size_counts_the_documents_each_kept_one_stands_for(tmp_path):
    docs, _ = corpus_with_copies(seed=2)
    weighted = docs.with_columns(cluster_size=pl.lit(2, pl.UInt32))  # as if exact dedup ran
    kept, removed = run_minhash(split(weighted, 3), tmp_path)
    assert kept["cluster_size"].sum() == 2 * docs.height
    dup_of = removed.group_by("detail").len()
    sizes = dict(kept.select("doc_id", "cluster_size").iter_rows())
    for keeper, n in dup_of.iter_rows():
        assert sizes[keeper] == 2 * (n + 1)


def test_keeps_the_document_that_passes_more_quality_rules(tmp_path):
    good = wiki().filter(pl.col("doc_id") == "xquad-en-008")["text"][0]
    spammy = good + " ### ### ### ### ### ### ### ### ### ###"  # fails the symbol ratio rule
    docs = pl.DataFrame({"doc_id": ["a-spammy", "b-clean"], "text": [spammy, good]})
    kept, removed = run_minhash([docs], tmp_path)
    assert kept["doc_id"].to_list() == ["b-clean"]
    assert removed.row(0, named=True)["detail"] == "b-clean"
    by_id = run_minhash([docs], tmp_path / "by-id", MinhashConfig(keep="doc_id"))[0]
    assert by_id["doc_id"].to_list() == ["a-spammy"]


def test_documents_without_words_are_not_clustered(tmp_path):
    docs = pl.DataFrame({"doc_id": ["a", "b", "c"], "text": ["!!!", "...", "— —"]})
    kept, removed = run_minhash([docs], tmp_path)
    assert kept.height == 3 and removed.height == 0


def test_any_number_of_hash_ranges_gives_the_same_clusters_and_keepers(tmp_path, monkeypatch):
    # Edited copies in three scripts, translations (the language check) and weights, in four
    # partitions: a cluster's pairs fall in several ranges, joined again by the cluster step.
    docs, _ = corpus_with_copies(seed=4)
    translations = wiki().filter(pl.col("doc_id").str.starts_with("xquad-"))
    docs = pl.concat([docs, translations.filter(~pl.col("doc_id").is_in(docs["doc_id"]))])
    docs = docs.with_columns(
        cluster_size=pl.Series(np.arange(docs.height) % 3 + 1, dtype=pl.UInt32)
    )
    found = {}
    for ranges in (1, 3, 8):
        root = tmp_path / f"k{ranges}"
        kept, removed = run_minhash(split(docs, 4), root, ranges=ranges)
        out = StageDir("minhash", root / "out")
        assert len(list(out.path.glob("components-*.arrow"))) == ranges
        found[ranges] = (out.duplicates.read_bytes(), kept.sort("doc_id"), removed.sort("doc_id"))
    duplicates, kept, removed = found[1]
    assert removed.height > 20 and pl.read_ipc(duplicates)["duplicate_of"].null_count() > 10
    for ranges in (3, 8):
        assert found[ranges][0] == duplicates
        assert found[ranges][1].equals(kept) and found[ranges][2].equals(removed)
    # A bucket task short of memory reads its files once per band, with the same pairs.
    monkeypatch.setattr(minhash_dedup_module, "_BUCKET_BYTES", 1)
    run_minhash(split(docs, 4), tmp_path / "band-by-band", ranges=3)
    assert (
        StageDir("minhash", tmp_path / "band-by-band" / "out").duplicates.read_bytes() == duplicates
    )


def test_a_cluster_split_over_ranges_is_joined_with_its_smallest_ref_as_label():
    # Range 0 joined 5-9 and 1-3, range 1 joined 9-12 and 3-7: one map each.
    maps = [pl.DataFrame({"ref": [1, 3, 5, 9], "label": [1, 1, 5, 5]}),
            pl.DataFrame({"ref": [3, 7, 9, 12], "label": [3, 3, 9, 9]})]  # fmt: skip
    nodes, labels = merge_components(iter(maps))
    assert dict(zip(nodes.tolist(), labels.tolist(), strict=True)) == {
        1: 1, 3: 1, 7: 1, 5: 5, 9: 5, 12: 5,
    }  # fmt: skip


def test_unique_pairs_equal_numpys():
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 2**63, (1000, 2), dtype=np.uint64)
    pairs = np.concatenate([pairs, pairs[::3], pairs[:, ::-1]])  # repeats, and swapped pairs
    assert np.array_equal(unique_pairs(pairs), np.unique(pairs, axis=0))
    assert unique_pairs(pairs[:1]).shape == (1, 2) and unique_pairs(pairs[:0]).shape == (0, 2)
