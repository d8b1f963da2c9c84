import gzip
import json

import polars as pl

from tasks.langid import LOW_SCORE, NOT_ALLOWED, LangIdConfig, detect_language, load_model
from tests.conftest import SAMPLE


def wiki() -> pl.DataFrame:
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    return pl.DataFrame(rows).select(pl.col("id").alias("doc_id"), "text", "lang_hint")


def test_accuracy_on_wikipedia_paragraphs_in_13_languages():
    df = wiki()
    result = detect_language(df, LangIdConfig(), load_model(None))
    per_lang = result.kept.group_by("lang_hint").agg((pl.col("lang") == pl.col("lang_hint")).mean())
    assert per_lang.height == 13  # 12 parallel languages plus native Japanese
    assert per_lang["lang"].min() >= 0.9, per_lang.sort("lang")


def test_allow_list_and_threshold_reasons():
    df = pl.DataFrame(
        {
            "doc_id": ["en", "de", "unclear"],
            "text": [
                "The committee met on Tuesday to discuss the annual budget for schools.",
                "Der Ausschuss traf sich am Dienstag, um den Jahreshaushalt zu besprechen.",
                "zzz qqq xxv",
            ],
        }
    )
    result = detect_language(df, LangIdConfig(min_score=0.5), load_model(None))
    assert result.kept["doc_id"].to_list() == ["en", "de"]
    assert result.kept["lang"].to_list() == ["en", "de"]
    assert result.removed["reason"].to_list() == [LOW_SCORE]
    only_en = detect_language(df, LangIdConfig(allow=("en",)), load_model(None))
    assert NOT_ALLOWED in only_en.removed["reason"].to_list()
    assert only_en.removed.filter(pl.col("doc_id") == "de")["detail"].to_list() == ["de"]
