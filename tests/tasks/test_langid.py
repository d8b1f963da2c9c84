import gzip
import json

import polars as pl

from shards.schema import LANG_TOP
from tasks.filter.langid import (
    LOW_SCORE,
    NOT_ALLOWED,
    LangIdConfig,
    detect_language,
    identify,
    language_of,
    load_model,
    segments,
)
from tests.conftest import SAMPLE

MODEL = load_model(None)


def wiki() -> pl.DataFrame:
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    return pl.DataFrame(rows).select(pl.col("id").alias("doc_id"), "text", "lang_hint")


def test_accuracy_on_wikipedia_paragraphs_in_13_languages():
    result = detect_language(wiki(), LangIdConfig(), MODEL)
    per_lang = result.kept.group_by("lang_hint").agg((pl.col("lang") == pl.col("lang_hint")).mean())
    assert per_lang.height == 13  # 12 parallel languages plus native Japanese
    assert per_lang["lang"].min() >= 0.9, per_lang.sort("lang")


def test_script_and_top_three_labels():
    df = wiki().filter(pl.col("lang_hint").is_in(["en", "ru", "ja", "zh", "hi"]))
    kept = detect_language(df, LangIdConfig(), MODEL).kept
    scripts = dict(kept.group_by("lang_hint").agg(pl.col("script").mode().first()).iter_rows())
    assert scripts == {"en": "Latn", "ru": "Cyrl", "ja": "Jpan", "zh": "Hani", "hi": "Deva"}
    top = kept[LANG_TOP][0].to_list()
    assert len(top) == 3 and top[0]["lang"] == kept["lang"][0]
    assert top[0]["score"] >= top[1]["score"] >= top[2]["score"]


def test_allow_list_and_thresholds_with_reasons():
    df = pl.DataFrame(
        {
            "doc_id": ["en", "de", "unclear", "digits"],
            "text": [
                "The committee met on Tuesday to discuss the annual budget for schools.",
                "Der Ausschuss traf sich am Dienstag, um den Jahreshaushalt zu besprechen.",
                "zzz qqq xxv",
                "12345 67890",
            ],
        }
    )
    result = detect_language(df, LangIdConfig(min_score=0.5), MODEL)
    assert result.kept["doc_id"].to_list() == ["en", "de"]
    assert result.removed["reason"].to_list() == [LOW_SCORE, LOW_SCORE]
    only_en = detect_language(df, LangIdConfig(allow=("en",)), MODEL)
    assert only_en.removed.filter(pl.col("doc_id") == "de")["reason"].to_list() == [NOT_ALLOWED]
    assert only_en.removed.filter(pl.col("doc_id") == "de")["detail"].to_list() == ["de"]
    strict_de = LangIdConfig(min_score=0.5, min_score_by_lang={"de": 0.9999})
    dropped = detect_language(df, strict_de, MODEL).removed
    assert dropped.filter(pl.col("doc_id") == "de")["reason"].to_list() == [LOW_SCORE]


def test_a_page_with_a_foreign_footer_keeps_its_main_language():
    english = "\n".join(wiki().filter(pl.col("lang_hint") == "en")["text"].head(12))
    footer = "\n".join(wiki().filter(pl.col("lang_hint") == "de")["text"].head(2))
    page = english + "\n" + footer
    cfg = LangIdConfig()
    assert len(segments(pl.Series([page]), cfg)) == cfg.max_segments  # a bounded sample
    assert identify(pl.Series([page]), MODEL, cfg)["lang"][0] == "en"
    assert identify(pl.Series([footer]), MODEL, cfg)["lang"][0] == "de"


def test_urls_emails_and_digit_runs_are_not_scored():
    text = "Kontakt: info@example.com https://example.com/a/b?c=1 +49 30 1234 5678 2024-05-01\n" * 3
    segs = segments(pl.Series([text]), LangIdConfig())
    assert "example" not in segs["text"][0] and "1234" not in segs["text"][0]


def test_glotlid_style_labels_map_to_iso_639_1_where_one_exists():
    assert language_of("__label__cmn_Hani") == "zh"
    assert language_of("__label__arb_Arab") == "ar"
    assert language_of("__label__eng_Latn") == "en"
    assert language_of("__label__yue_Hani") == "yue"  # no ISO 639-1 code
    assert language_of("__label__en") == "en"  # lid.176 labels stay as they are
    assert language_of("__label__fr") == "fr"
    assert language_of("__label__als") == "gsw"  # lid.176's Alemannic, not Tosk Albanian
