"""Decontamination against evaluation sets made from the sample's Wikipedia paragraphs.

XQuAD's paragraphs are the same in twelve languages, so a planted English or Chinese passage
has translations in the sample that must be kept."""

import gzip
import json

import polars as pl
import pytest

from shards.workdir import StageDir
from tasks.filter.decontam import (
    OVERLAP,
    DecontamConfig,
    build_index,
    decontaminate,
    index_key,
    words,
)
from tests.conftest import SAMPLE, write_jsonl

PLANTED = ["xquad-en-003", "xquad-en-013", "xquad-zh-023", "jsquad_v1.3_valid-0012",
           "cmrc2018_dev-0010"]  # fmt: skip


@pytest.fixture(scope="module")
def wiki() -> pl.DataFrame:
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    return pl.DataFrame({"doc_id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})


def passage(text: str, start: int, length: int) -> str:
    """`length` words of `text` from word `start`, as the text has them (a benchmark's
    question or context quoting part of a page)."""
    _, found = words(text)
    return text[found[start].start() : found[start + length - 1].end()]


def index_of(tmp_path, name: str, rows: list[dict], cfg: DecontamConfig):
    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    key = index_key(name, [str(path)], cfg)
    at = StageDir.of(tmp_path / "work", "evalset", key, "")
    from shards.writer import write_table

    write_table(build_index(key, cfg), at.index, compression=None)
    return at.index


def test_planted_passages_are_dropped_and_their_translations_kept(wiki, tmp_path):
    cfg = DecontamConfig(eval_sets={"qa": [str(tmp_path)]})
    texts = dict(zip(wiki["doc_id"], wiki["text"], strict=True))
    planted = PLANTED
    # A passage of 20 words in the middle of each; the evaluation record also has a short
    # answer (under min_words: not indexed) and a number field.
    rows = [{"question": "What is it about?", "context": passage(texts[p], 5, 20), "answer": "it",
             "id": i} for i, p in enumerate(planted)]  # fmt: skip
    index = index_of(tmp_path, "qa", rows, cfg)
    result = decontaminate(wiki, {"qa": index}, cfg)
    dropped = result.removed["doc_id"].to_list()
    assert sorted(dropped) == sorted(planted)
    assert set(result.removed["reason"]) == {OVERLAP}
    for detail in result.removed["detail"]:
        assert detail.startswith("qa: ")
    # The English passages' translations (same XQuAD number) are all kept.
    kept = set(result.kept["doc_id"])
    for lang in ("de", "es", "ru", "zh", "ar", "hi", "th", "vi"):
        assert "xquad-" + lang + "-003" in kept
    assert result.kept.height + result.removed.height == wiki.height


def test_chinese_is_matched_in_characters(wiki, tmp_path):
    cfg = DecontamConfig(eval_sets={"zh": [str(tmp_path)]}, n=13)
    text = wiki.filter(pl.col("doc_id") == "xquad-zh-023")["text"][0]
    _, found = words(text)
    assert all(len(m.group()) == 1 for m in found[:20] if "\u4e00" <= m.group() <= "\u9fff")
    snippet = passage(text, 10, 13)  # 13 characters of Chinese: exactly one n-gram
    index = index_of(tmp_path, "zh", [{"text": snippet}], cfg)
    result = decontaminate(wiki, {"zh": index}, cfg)
    assert result.removed["doc_id"].to_list() == ["xquad-zh-023"]
    assert result.removed["detail"][0] == "zh: " + words(snippet)[0]


def test_min_overlap_and_short_texts(tmp_path):
    cfg = DecontamConfig(eval_sets={"s": [str(tmp_path)]}, n=5, min_words=3, min_overlap=2)
    sentence = "the quick brown fox jumps over the lazy dog again"
    index = index_of(tmp_path, "s", [{"text": sentence}, {"t": "Alpha Beta Gamma"}], cfg)
    docs = pl.DataFrame({
        "doc_id": ["one-gram", "two-grams", "short-whole", "unrelated", "too-short"],
        "text": ["x the quick brown fox jumps y", "THE QUICK, brown fox jumps over!",
                 "alpha beta gamma delta", "nothing to see here at all", "alpha beta"],
    })  # fmt: skip
    removed = decontaminate(docs, {"s": index}, cfg).removed
    # One shared 5-gram is under min_overlap 2; the short text indexed whole counts once, so
    # it needs min_overlap 1 to drop a document.
    assert removed["doc_id"].to_list() == ["two-grams"]
    once = decontaminate(docs, {"s": index}, cfg.model_copy(update={"min_overlap": 1})).removed
    assert sorted(once["doc_id"]) == ["one-gram", "short-whole", "two-grams"]


def test_a_missing_evaluation_file_is_named():
    with pytest.raises(ValueError, match="eval set 'mmlu': no such file or folder: /nope"):
        DecontamConfig(eval_sets={"mmlu": "/nope"})
