"""Augment: new wordings of scarce data, by back-translation, paraphrase or an LLM.

In: the documents quality kept. Out: the same documents, plus new ones rewritten from a seeded
selection of them, with `augmented_from`, `augment_method`, `augment_model` and `augment_chrf`
set (null on the originals).

Map, reduce, map: `select_sources` chooses the sources over the whole run; per partition,
`generate_variants` rewrites them a persisted batch at a time and vets each variant as an input
document is vetted (normalize, a chrF band against its source, language ID, quality);
`find_near_duplicates` drops variants that near-duplicate another kept document; `augment`
writes each partition's documents and surviving variants. The stage's stats count the variants
as `added`, so in = the previous stage's kept + added.
"""

import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from prefect import task
from pydantic import BaseModel, Field, model_validator

from shards.reader import read_frame
from shards.schema import (
    AUGMENT_CHRF,
    AUGMENT_METHOD,
    AUGMENT_MODEL,
    AUGMENTED_FROM,
    CLUSTER_SIZE,
    DATE,
    DECLARED_LANG,
    DOC_ID,
    EXTRACTION,
    LANG,
    QUARANTINED,
    SOURCE,
    TEXT,
    TITLE,
    URL,
)
from shards.writer import write_table
from tasks.clean.normalize import NormalizeConfig, normalize_batch
from tasks.dedup.minhash_cluster import band_keys, estimated_jaccard
from tasks.dedup.minhash_dedup import MinhashConfig
from tasks.dedup.minhash_sketch import signatures
from tasks.filter.langid import LangIdConfig, detect_language, load_model
from tasks.filter.quality import QualityConfig, quality_score, score_quality
from tasks.partition import StageDir
from tasks.progress import StageProgress
from tasks.records import Rule, StageResult, StageStats, apply_rules, ledger_rows, text_bytes

if TYPE_CHECKING:
    from tasks.augment.backends import Backend

STAGE = "augment"


class AugmentConfig(BaseModel, frozen=True, extra="forbid"):
    """Which documents are rewritten, by which backend, and which rewrites are kept."""

    enabled: bool = False
    backend: Literal["backtranslate", "paraphrase", "llm"] = "backtranslate"
    # backtranslate: two translation models (hub ids or local folders), there and back
    model_a: str | None = None
    model_b: str | None = None
    # paraphrase: one seq2seq model, and the text put before each input (T5: "paraphrase: ")
    model: str | None = None
    prefix: str = ""
    # llm: an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, TGI, llama.cpp)
    endpoint: str | None = None
    llm_model: str | None = None
    style: str = Field("wikipedia", description="a prompt in tasks/resources/augment_prompts")
    api_key_env: str = Field("OPENAI_API_KEY", description="the variable holding the API key")
    temperature: float = Field(0.7, ge=0)
    concurrency: int = Field(4, gt=0, description="llm requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="per llm request")
    retries: int = Field(3, ge=0, description="on 429, 5xx, timeouts and connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first back-off; doubles each retry")
    # selection
    languages: list[str] = Field([], description="empty: every language")
    min_quality: float | None = Field(None, ge=0, le=1, description="quality_score at least")
    fraction: float = Field(1.0, ge=0, le=1, description="seeded sample of the eligible")
    max_new_docs: int | None = Field(None, gt=0)
    variants: int = Field(1, gt=0, description="rewrites per selected document")
    seed: int = 0
    # which rewrites are kept: chrF against the source inside [min_chrf, max_chrf]
    min_chrf: float = Field(25.0, ge=0, le=100, description="below: drifted too far")
    max_chrf: float = Field(90.0, ge=0, le=100, description="above: a near copy")
    # generation
    batch_docs: int = Field(16, gt=0, description="documents per persisted batch")
    batch_size: int = Field(32, gt=0, description="sentences per forward pass")
    max_new_tokens: int = Field(256, gt=0)
    num_beams: int = Field(1, gt=0, description="1: greedy (sampling when variants > 1)")
    device: str = Field("auto", description="auto: cuda when there is one, else cpu")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _backend_has_its_models(self) -> "AugmentConfig":
        if not self.enabled:
            return self
        needs = {
            "backtranslate": ("model_a", "model_b"),
            "paraphrase": ("model",),
            "llm": ("endpoint", "llm_model"),
        }[self.backend]
        missing = [f"augment.{key}" for key in needs if not getattr(self, key)]
        if missing:
            raise ValueError(f"backend {self.backend} needs {' and '.join(missing)}")
        if self.min_chrf > self.max_chrf:
            raise ValueError(f"min_chrf {self.min_chrf} is above max_chrf {self.max_chrf}")
        return self


NEAR_COPY = "augment_near_copy"  # chrF above max_chrf: hardly reworded
DRIFT = "augment_drift"  # chrF below min_chrf: the meaning has likely moved
LANGUAGE_CHANGED = "augment_language_changed"
NEAR_DUPLICATE = "augment_near_duplicate"  # of a kept document other than its source
FAILED = "augment_failed"  # quarantined: the backend failed for good on the batch


@dataclass(frozen=True)
class Vetting:
    """The configs new documents are checked with, as every input document is."""

    normalize: NormalizeConfig
    langid: LangIdConfig
    quality: QualityConfig
    minhash: MinhashConfig


def stage_key(cfg: AugmentConfig, vet: Vetting) -> dict[str, Any]:
    """What the augment stage's output depends on (its work directory's fingerprint)."""
    return {"augment": cfg.model_dump(mode="json")} | {
        name: getattr(vet, name).model_dump(mode="json")
        for name in ("normalize", "langid", "quality", "minhash")
    }


def _draw(doc_ids: pl.Expr, seed: int) -> pl.Expr:
    """A seeded uniform number in [0, 1) per doc_id, the same in every run."""
    return doc_ids.hash(seed).cast(pl.Float64) / float(2**64)


def eligible(df: pl.DataFrame, cfg: AugmentConfig) -> pl.DataFrame:
    """The documents of `df` that may be rewritten: doc_id and their seeded draw."""
    keep = pl.col(DOC_ID).is_not_null()
    if cfg.languages:
        keep &= pl.col(LANG).is_in(cfg.languages)
    if cfg.min_quality is not None:
        keep &= quality_score(df) >= cfg.min_quality
    draw = _draw(pl.col(DOC_ID), cfg.seed)
    return (
        _with_lang(df)
        .filter(keep)
        .select(DOC_ID, draw.alias("draw"))
        .filter(pl.col("draw") < cfg.fraction)
    )


def _with_lang(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with a `lang` column (null when language ID is off)."""
    return df if LANG in df.columns else df.with_columns(pl.lit(None, pl.String).alias(LANG))


def choose(candidates: pl.DataFrame, cfg: AugmentConfig) -> pl.DataFrame:
    """The sources, at most `max_new_docs / variants` of them, by smallest draw."""
    if cfg.max_new_docs is None:
        return candidates
    n = max(cfg.max_new_docs // cfg.variants, 1)
    return candidates.sort("draw", DOC_ID).head(n)


def variant_id(source: pl.Expr, method: str, variant: int) -> pl.Expr:
    return pl.format("{}~{}{}", source, pl.lit(method), pl.lit(variant))


def rewrite_batch(batch: pl.DataFrame, backend: "Backend", cfg: AugmentConfig) -> pl.DataFrame:
    """Rewrite one batch of sources: a row per variant, with the error if the backend failed on
    the batch for good or raised (the variants are then quarantined, the run goes on)."""
    from tasks.augment.backends import BackendError  # the backends import this module

    texts, langs = batch[TEXT].to_list(), _with_lang(batch)[LANG].to_list()
    error = None
    try:
        outs = backend.rewrite(texts, langs, cfg.variants, cfg.seed)
    except BackendError as e:
        outs, error = [[None] * cfg.variants for _ in texts], str(e)
    except Exception as e:  # a model that cannot take these inputs: quarantine, go on
        outs, error = [[None] * cfg.variants for _ in texts], f"{type(e).__name__}: {e}"[:1000]
    return pl.DataFrame(
        {
            AUGMENTED_FROM: [s for s in batch[DOC_ID] for _ in range(cfg.variants)],
            "variant": [v for _ in texts for v in range(cfg.variants)],
            TEXT: [t for variants in outs for t in variants],
            AUGMENT_METHOD: backend.method,
            AUGMENT_MODEL: backend.model_name,
            "error": error,
        },
        schema_overrides={TEXT: pl.String, "error": pl.String},
    )


def _as_documents(sources: pl.DataFrame, variants: pl.DataFrame) -> pl.DataFrame:
    """Variants as documents: their source's metadata, a new doc_id, no signals yet."""
    carried = (SOURCE, URL, TITLE, DATE, DECLARED_LANG, EXTRACTION)
    meta = [c for c in carried if c in sources.columns]
    base = _with_lang(sources).select(DOC_ID, *meta, pl.col(LANG).alias("_source_lang"),
                          pl.col(TEXT).alias("_source_text"))  # fmt: skip
    return variants.join(base, left_on=AUGMENTED_FROM, right_on=DOC_ID).select(
        pl.format("{}~{}{}", AUGMENTED_FROM, AUGMENT_METHOD, "variant").alias(DOC_ID),
        *meta,
        TEXT,
        pl.lit(None, pl.Binary).alias("raw"),
        pl.lit(1, pl.UInt32).alias(CLUSTER_SIZE),
        AUGMENTED_FROM,
        AUGMENT_METHOD,
        AUGMENT_MODEL,
        "_source_lang",
        "_source_text",
        "error",
    )


def _band_rules(cfg: AugmentConfig) -> list[Rule]:
    chrf_detail = pl.format("chrF {}", pl.col(AUGMENT_CHRF).round(1))
    return [
        Rule(NEAR_COPY, pl.col(AUGMENT_CHRF) > cfg.max_chrf, chrf_detail),
        Rule(DRIFT, pl.col(AUGMENT_CHRF) < cfg.min_chrf, chrf_detail),
    ]


def vet_variants(
    sources: pl.DataFrame, variants: pl.DataFrame, cfg: AugmentConfig, vet: Vetting
) -> StageResult:
    """Check new documents as input documents are checked: normalize, the chrF band against
    the source, language ID (the source's language), quality. Failed batches are quarantined."""
    docs = _as_documents(sources, variants)
    failed = docs.filter(pl.col("error").is_not_null())
    removed = [ledger_rows(failed, STAGE, QUARANTINED, FAILED, pl.col("error"))]
    steps: list[Callable[[pl.DataFrame], StageResult]] = [
        lambda df: normalize_batch(df, vet.normalize),
        lambda df: apply_rules(_with_chrf(df), STAGE, _band_rules(cfg)),
    ]
    if vet.langid.enabled:
        steps.append(lambda df: _same_language(df, vet.langid))
    if vet.quality.enabled:
        steps.append(lambda df: score_quality(df, vet.quality))
    df = docs.filter(pl.col("error").is_null()).drop("error")
    for step in steps:
        result = step(df)
        df = result.kept
        removed.append(result.removed.with_columns(stage=pl.lit(STAGE)))
    return StageResult(df.drop("_source_lang", "_source_text"), pl.concat(removed))


def _with_chrf(df: pl.DataFrame) -> pl.DataFrame:
    from tasks.augment.backends import chrf

    scores = chrf(df[TEXT].to_list(), df["_source_text"].to_list())
    return df.with_columns(pl.Series(AUGMENT_CHRF, scores, pl.Float32))


def _same_language(df: pl.DataFrame, cfg: LangIdConfig) -> StageResult:
    result = detect_language(df, cfg, load_model(cfg.model))
    changed = pl.col(LANG).ne_missing(pl.col("_source_lang")) & pl.col("_source_lang").is_not_null()
    detail = pl.format("{} from {}", pl.col(LANG), pl.col("_source_lang"))
    again = apply_rules(result.kept, STAGE, [Rule(LANGUAGE_CHANGED, changed, detail)])
    return StageResult(again.kept, pl.concat([result.removed, again.removed]))


def near_duplicates(kept: pl.DataFrame, new: pl.DataFrame, cfg: MinhashConfig) -> pl.DataFrame:
    """The new documents (doc_id, augmented_from, text) that are near-duplicates, by
    MinHash/LSH with the minhash stage's settings, of a kept document other than their source
    or of a new document with a smaller doc_id: `doc_id`, `duplicate_of`."""
    if new.height == 0:
        return pl.DataFrame(schema={DOC_ID: pl.String, "duplicate_of": pl.String})
    ids = pl.concat([kept[DOC_ID], new[DOC_ID]])
    texts = pl.concat([kept[TEXT], new[TEXT]])
    sigs = signatures(texts.to_arrow(), cfg.num_perm, cfg.seed, cfg.ngram, cfg.char_ngram)
    bands, rows = cfg.lsh_params()
    keys = band_keys(sigs, bands, rows)
    index = np.arange(len(ids))
    buckets = pl.concat(
        pl.DataFrame({"band": b, "key": keys[:, b], "i": index}) for b in range(bands)
    )
    first_new = kept.height
    pairs = (
        buckets.filter(pl.col("i") >= first_new)
        .join(buckets, on=["band", "key"], suffix="_other")
        .filter(pl.col("i") != pl.col("i_other"))
        .select("i", "i_other")
        .unique()
    )
    i, j = pairs["i"].to_numpy(), pairs["i_other"].to_numpy()
    similar = estimated_jaccard(sigs[i], sigs[j]) >= cfg.threshold
    own = np.concatenate([np.full(first_new, None, object), new[AUGMENTED_FROM].to_numpy()])
    id_array = ids.to_numpy()
    not_source = id_array[j] != own[i]
    earlier_new = (j < first_new) | (id_array[j] < id_array[i])
    hit = similar & not_source & earlier_new
    found = pl.DataFrame(
        {DOC_ID: id_array[i[hit]].tolist(), "duplicate_of": id_array[j[hit]].tolist()},
        schema={DOC_ID: pl.String, "duplicate_of": pl.String},
    )
    return found.group_by(DOC_ID).agg(pl.col("duplicate_of").min()).sort(DOC_ID)


def _candidates(dst: StageDir, part: str) -> Path:
    return dst.path / f"{part}.candidates.arrow"


def _rejected(dst: StageDir, part: str) -> Path:
    return dst.path / f"{part}.rejected.arrow"


def _near_duplicates_path(dst: StageDir) -> Path:
    return dst.path / "near_duplicates.arrow"


def _selection(dst: StageDir) -> Path:
    return dst.path / "selection.arrow"


@task(name="augment-select")
def select_sources(src: StageDir, dst: StageDir, parts: list[str], cfg: AugmentConfig) -> int:
    """Choose the documents to rewrite over the whole run (seeded, so every run chooses the
    same ones); write them with their partition. Returns how many."""
    if not _selection(dst).exists():
        found = [eligible(read_frame(src.kept(p)), cfg).with_columns(part=pl.lit(p)) for p in parts]
        chosen = choose(pl.concat(found) if found else pl.DataFrame(), cfg)
        write_table(chosen.select(DOC_ID, "part").to_arrow(), _selection(dst))
    return read_frame(_selection(dst)).height


_LOCAL_MODELS = threading.Lock()  # one generation at a time per process: torch uses every core


@task(name="augment-generate")
def generate_variants(
    part: str, src: StageDir, dst: StageDir, cfg: AugmentConfig, vet: Vetting
) -> int:
    """Rewrite this partition's chosen documents, a persisted batch at a time (a killed run
    repeats at most the batch it was in), then vet the variants. Returns the variants made."""
    if _rejected(dst, part).exists():
        return read_frame(_rejected(dst, part)).height + read_frame(_candidates(dst, part)).height
    chosen = read_frame(_selection(dst)).filter(pl.col("part") == part)[DOC_ID]
    sources = read_frame(src.kept(part)).filter(pl.col(DOC_ID).is_in(chosen.implode()))
    starts = range(0, sources.height, cfg.batch_docs)
    paths = [dst.path / f"{part}.batch-{i:05d}.arrow" for i in range(len(starts))]
    with StageProgress(f"augment-{part}", len(paths), "batches") as progress:
        for done, (start, path) in enumerate(zip(starts, paths, strict=True), 1):
            if not path.exists():
                batch = sources.slice(start, cfg.batch_docs)
                lock = nullcontext() if cfg.backend == "llm" else _LOCAL_MODELS
                with lock:
                    rows = rewrite_batch(batch, _backend(cfg), cfg)
                write_table(rows.to_arrow(), path)
            progress.update(done)
    variants = pl.concat([read_frame(p) for p in paths]) if paths else _no_variants()
    result = vet_variants(sources, variants, cfg, vet)
    write_table(result.kept.to_arrow(), _candidates(dst, part), compression="lz4")
    write_table(result.removed.to_arrow(), _rejected(dst, part))  # last: the done marker
    return variants.height


def _backend(cfg: AugmentConfig) -> "Backend":
    from tasks.augment.backends import make_backend

    return make_backend(cfg)


def _no_variants() -> pl.DataFrame:
    columns = (AUGMENTED_FROM, TEXT, AUGMENT_METHOD, AUGMENT_MODEL, "error")
    return pl.DataFrame(schema={**dict.fromkeys(columns, pl.String), "variant": pl.Int64})


@task(name="augment-near-duplicates")
def find_near_duplicates(src: StageDir, dst: StageDir, parts: list[str], cfg: MinhashConfig):
    """Find the new documents that are near-duplicates of what is kept (see
    `near_duplicates`), over the whole run."""
    if _near_duplicates_path(dst).exists():
        return
    kept = pl.concat([read_frame(src.kept(p)).select(DOC_ID, TEXT) for p in parts])
    new = pl.concat(
        [read_frame(_candidates(dst, p)).select(DOC_ID, AUGMENTED_FROM, TEXT) for p in parts]
    )
    write_table(near_duplicates(kept, new, cfg).to_arrow(), _near_duplicates_path(dst))


@task(name="augment-scores")
def score_variants(src: StageDir, dst: StageDir, parts: list[str]) -> dict[str, float]:
    """chrF and corpus BLEU (sacrebleu) of the variants against their sources: all that were
    generated, and those kept (vetted, not near-duplicates)."""
    from tasks.augment.backends import bleu, chrf

    sources = pl.concat([read_frame(src.kept(p)).select(DOC_ID, TEXT) for p in parts])
    made = [read_frame(path) for p in parts for path in sorted(dst.path.glob(f"{p}.batch-*"))]
    generated = pl.concat(made).filter(pl.col(TEXT).is_not_null()) if made else _no_variants()
    dups = read_frame(_near_duplicates_path(dst))[DOC_ID]
    kept = pl.concat([read_frame(_candidates(dst, p)) for p in parts])
    kept = kept.filter(~pl.col(DOC_ID).is_in(dups.implode())).select(AUGMENTED_FROM, TEXT)
    scores: dict[str, float] = {}
    for name, df in (("generated", generated), ("kept", kept)):
        pairs = df.join(sources, left_on=AUGMENTED_FROM, right_on=DOC_ID, suffix="_source")
        hyp, ref = pairs[TEXT].to_list(), pairs[f"{TEXT}_source"].to_list()
        scores[f"{name}_bleu"] = round(bleu(hyp, ref), 2)
        scores[f"{name}_chrf_mean"] = round(float(np.mean(chrf(hyp, ref))) if hyp else 0.0, 2)
    return scores


@task(name="augment")
def augment(part: str, src: StageDir, dst: StageDir) -> StageStats:
    """The partition's documents, then its new documents that are not near-duplicates."""
    if (stats := dst.done(part)) is not None:
        return stats
    start = time.perf_counter()
    kept = read_frame(src.kept(part))
    candidates = read_frame(_candidates(dst, part))
    rejected = read_frame(_rejected(dst, part))
    dups = read_frame(_near_duplicates_path(dst))
    marked = candidates.join(dups, on=DOC_ID, how="left")
    rule = Rule(NEAR_DUPLICATE, pl.col("duplicate_of").is_not_null(), pl.col("duplicate_of"))
    vetted = apply_rules(marked, STAGE, [rule])
    added = candidates.height + rejected.height
    result = StageResult(
        pl.concat([kept, vetted.kept.drop("duplicate_of")], how="diagonal_relaxed"),
        pl.concat([rejected, vetted.removed], how="diagonal_relaxed"),
    )
    stats = result.stats(STAGE, kept.height + added, text_bytes(kept), time.perf_counter() - start)
    stats.added = added
    return dst.save(part, result, stats)
