import gzip
import json

import polars as pl
import pytest

from flows.config import ConfigError, load_config
from tasks.augment import augment as aug
from tasks.dedup.minhash_dedup import MinhashConfig
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


class ReversingBackend:
    """Rewrites a document by reversing its sentences' word order; can fail on a call."""

    method, model_name = "paraphrase", "reverse"

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls, self.fail_on = 0, fail_on

    def rewrite(self, texts, langs, variants, seed):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt  # as a kill: nothing of the batch is written
        return [[" ".join(reversed(t.split()))] * variants for t in texts]


@pytest.fixture
def stage_dirs(tmp_path):
    from shards.schema import SOURCE
    from shards.workdir import StageDir
    from tasks.partition import save
    from tasks.records import StageResult, StageStats, empty_ledger

    src = StageDir("quality", tmp_path / "quality-0")
    df = wiki_docs(24).with_columns(pl.lit("en").alias("lang"), pl.lit("x").alias(SOURCE))
    for i, part in enumerate(["p0", "p1"]):
        chunk = df.slice(12 * i, 12)
        save(src, part, StageResult(chunk, empty_ledger()), StageStats("quality", 12, 12))
    return src, StageDir("augment", tmp_path / "augment-0")


def vetting():
    from tasks.clean.normalize import NormalizeConfig
    from tasks.filter.langid import LangIdConfig
    from tasks.filter.quality import QualityConfig

    return aug.Vetting(NormalizeConfig(), LangIdConfig(), QualityConfig(enabled=False),
                       MinhashConfig())  # fmt: skip


@pytest.mark.usefixtures("prefect_server")
def test_a_killed_generation_repeats_only_its_batch(stage_dirs, monkeypatch):
    src, dst = stage_dirs
    cfg = aug.AugmentConfig(batch_docs=4, min_chrf=0)
    aug.select_sources.fn(src, dst, ["p0", "p1"], cfg)
    first = ReversingBackend(fail_on=3)
    monkeypatch.setattr(aug, "_backend", lambda cfg: first)
    with pytest.raises(KeyboardInterrupt):
        aug.generate_variants.fn("p0", src, dst, cfg, vetting())
    assert len(list(dst.path.glob("p0.batch-*.arrow"))) == 2  # the third batch was lost
    second = ReversingBackend()
    monkeypatch.setattr(aug, "_backend", lambda cfg: second)
    assert aug.generate_variants.fn("p0", src, dst, cfg, vetting()) == 12
    assert second.calls == 1  # only the batch that was cut short
    aug.generate_variants.fn("p1", src, dst, cfg, vetting())
    aug.find_near_duplicates.fn(src, dst, ["p0", "p1"], MinhashConfig())
    stats = aug.augment.fn("p0", src, dst)
    assert (stats.n_in, stats.added, stats.kept) == (24, 12, 24)
    kept = pl.read_ipc(dst.kept("p0"))
    assert kept.filter(pl.col("augmented_from").is_not_null())[
        "augment_model"
    ].unique().to_list() == ["reverse"]


@pytest.mark.usefixtures("prefect_server")
def test_an_endpoint_that_fails_for_good_quarantines_the_batch(stage_dirs, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-never-logged")
    src, dst = stage_dirs
    cfg = aug.AugmentConfig(enabled=True, backend="llm", endpoint="http://127.0.0.1:9/v1",
                            llm_model="m", retries=1, backoff_s=0, max_new_docs=3)  # fmt: skip
    aug.select_sources.fn(src, dst, ["p0", "p1"], cfg)
    for part in ("p0", "p1"):
        aug.generate_variants.fn(part, src, dst, cfg, vetting())
    aug.find_near_duplicates.fn(src, dst, ["p0", "p1"], MinhashConfig())
    stats = aug.augment.fn("p0", src, dst) + aug.augment.fn("p1", src, dst)
    assert stats.kept == 24 and stats.added == 3
    assert stats.quarantined == {aug.FAILED: 3}
    ledger = pl.concat([pl.read_ipc(dst.ledger(p)) for p in ("p0", "p1")])
    assert ledger["detail"].str.contains("127.0.0.1:9").all()
    assert not ledger["detail"].str.contains("sk-secret").any()


def test_a_model_that_raises_quarantines_its_batch():
    class Broken(ReversingBackend):
        def rewrite(self, texts, langs, variants, seed):
            raise IndexError("index out of range in self")

    batch = wiki_docs(3).with_columns(pl.lit("en").alias("lang"))
    rows = aug.rewrite_batch(batch, Broken(), aug.AugmentConfig(variants=2))
    assert rows.height == 6 and rows["text"].null_count() == 6
    assert set(rows["error"]) == {"IndexError: index out of range in self"}
