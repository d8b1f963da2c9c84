import gzip
import json

import polars as pl
import pytest

from flows.config import ConfigError, load_config
from tasks import augment as aug
from tasks.minhash_dedup import MinhashConfig
from tests.conftest import SAMPLE, english


def docs(n: int, lang: str = "en") -> pl.DataFrame:
    ids = [f"d{i:03d}" for i in range(n)]
    return pl.DataFrame({"doc_id": ids, "text": [english(i) for i in range(n)], "lang": lang})


def test_backends_need_their_models():
    on = "augment.enabled=true"
    with pytest.raises(ConfigError, match=r"backtranslate needs augment\.model_a and augment\.mo"):
        load_config(sets=[on])
    with pytest.raises(ConfigError, match=r"paraphrase needs augment\.model"):
        load_config(sets=[on, "augment.backend=paraphrase"])
    llm = [on, "augment.backend=llm", "augment.endpoint=x", "augment.llm_model=m"]
    with pytest.raises(ConfigError, match=r"min_chrf 80\.0 is above max_chrf 50\.0"):
        load_config(sets=[*llm, "augment.min_chrf=80", "augment.max_chrf=50"])


def test_selection_is_seeded_by_language_fraction_and_cap():
    df = pl.concat([docs(200), docs(50, "de").with_columns(pl.col("doc_id") + "de")])
    cfg = aug.AugmentConfig(languages=["en"], fraction=0.25, seed=3)
    chosen = aug.eligible(df, cfg)
    assert 30 < chosen.height < 70  # about a quarter of the 200 English ones
    assert chosen["doc_id"].str.ends_with("de").sum() == 0
    assert aug.eligible(df, cfg).equals(chosen)  # the same every run
    other = aug.eligible(df, cfg.model_copy(update={"seed": 4}))
    assert set(other["doc_id"]) != set(chosen["doc_id"])
    capped = aug.choose(chosen, cfg.model_copy(update={"max_new_docs": 10, "variants": 2}))
    assert capped.height == 5 and capped["draw"].max() <= chosen["draw"].sort()[4]


def wiki_docs(n: int) -> pl.DataFrame:
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    en = [r["text"] for r in rows if r["id"].startswith("xquad-en")][:n]
    return pl.DataFrame({"doc_id": [f"d{i:03d}" for i in range(n)], "text": en})


def test_near_duplicates_of_kept_documents_but_not_of_the_source():
    kept = wiki_docs(20)
    words = kept["text"][5].split()
    fresh = wiki_docs(22)["text"][21]
    new = pl.DataFrame(
        {
            "doc_id": ["d005~x0", "d007~x0", "d009~x0", "d009~x1"],
            "augmented_from": ["d005", "d007", "d009", "d009"],
            "text": [
                kept["text"][5],  # a copy of its own source: the chrF band drops those
                " ".join(words[:-1]),  # d007's rewrite that copies d005: a near-duplicate
                fresh,  # new wording
                fresh + " Indeed.",  # the same as its sibling with a smaller doc_id
            ],
        }
    )
    found = aug.near_duplicates(kept, new, MinhashConfig(threshold=0.7))
    assert dict(found.iter_rows()) == {"d007~x0": "d005", "d009~x1": "d009~x0"}
    assert aug.near_duplicates(kept, new.head(0), MinhashConfig()).height == 0
