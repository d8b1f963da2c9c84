"""Augment: new wordings of scarce data, by back-translation, paraphrase or an LLM.

In: the documents quality kept. Out: the same documents, plus new ones rewritten from a seeded
selection of them, with `augmented_from`, `augment_method`, `augment_model` and `augment_chrf`
set (null on the originals).

Map, reduce, map: `select_sources` chooses the sources over the whole run; per partition,
`generate_variants` rewrites them a persisted batch at a time and vets each variant as an input
document is vetted (normalize, a chrF band against its source, language ID, quality);
`find_near_duplicates` drops variants that near-duplicate another kept document; `augment`
writes each partition's documents and surviving variants. The stage's stats count the variants
as `added`, so in = the previous stage's kept + added. Settings, models and scores are in
`tasks.augment.config`, `tasks.augment.backends` and `tasks.augment.metrics`.
"""

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import numpy as np
import polars as pl
from prefect import task

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
from shards.workdir import StageDir
from tasks.augment.base import Backend, BackendError
from tasks.augment.config import AugmentConfig, Vetting
from tasks.augment.metrics import bleu, chrf
from tasks.clean.normalize import normalize_batch
from tasks.dedup.minhash_cluster import band_keys, estimated_jaccard, query_pairs
from tasks.dedup.minhash_dedup import MinhashConfig
from tasks.dedup.minhash_sketch import signatures
from tasks.filter.langid import LangIdConfig, detect_language, load_model
from tasks.filter.quality import quality_score, score_quality
from tasks.lazy import serial_imports
from tasks.partition import keep_once, run_partition
from tasks.progress import StageProgress
from tasks.records import Rule, StageResult, StageStats, apply_rules, ledger_rows

STAGE = "augment"


NEAR_COPY = "augment_near_copy"  # chrF above max_chrf: hardly reworded
DRIFT = "augment_drift"  # chrF below min_chrf: the meaning has likely moved
LANGUAGE_CHANGED = "augment_language_changed"
NEAR_DUPLICATE = "augment_near_duplicate"  # of a kept document other than its source
FAILED = "augment_failed"  # quarantined: the backend failed for good on the batch


def eligible(df: pl.DataFrame, cfg: AugmentConfig) -> pl.DataFrame:
    """The documents of `df` that may be rewritten: doc_id and their seeded draw."""
    keep = pl.col(DOC_ID).is_not_null()
    if cfg.languages:
        keep &= pl.col(LANG).is_in(cfg.languages)
    if cfg.min_quality is not None:
        keep &= quality_score(df) >= cfg.min_quality
    draw = pl.col(DOC_ID).hash(cfg.seed).cast(pl.Float64) / float(2**64)  # the same every run
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


def rewrite_batch(batch: pl.DataFrame, backend: Backend, cfg: AugmentConfig) -> pl.DataFrame:
    """Rewrite one batch of sources: a row per variant, with the error if the backend failed on
    the batch for good or raised (the variants are then quarantined, the run goes on)."""
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
    """Vet the `variants` of `sources` (see `vet_documents`)."""
    return vet_documents(_as_documents(sources, variants), cfg, vet)


def vet_documents(docs: pl.DataFrame, cfg: AugmentConfig, vet: Vetting) -> StageResult:
    """Check new documents as input documents are checked: normalize, the chrF band against
    the source, language ID (the source's language), quality. Failed batches are quarantined.

    Args:
        docs: Variants as `_as_documents` makes them (with their batch's `error`).
        cfg: The chrF band.
        vet: The configs of the other checks.

    Returns:
        The vetted documents and the ledger rows of the others.
    """
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
    ids = pl.concat([kept[DOC_ID], new[DOC_ID]]).to_numpy()
    texts = pl.concat([kept[TEXT], new[TEXT]])
    sigs = signatures(texts.to_arrow(), cfg.num_perm, cfg.seed, cfg.ngram, cfg.char_ngram)
    first_new = kept.height
    pairs = query_pairs(band_keys(sigs, *cfg.lsh_params()), np.arange(first_new, len(ids)))
    i, j = pairs[:, 0], pairs[:, 1]
    similar = estimated_jaccard(sigs[i], sigs[j]) >= cfg.threshold
    own = np.concatenate([np.full(first_new, None, object), new[AUGMENTED_FROM].to_numpy()])
    not_source = ids[j] != own[i]
    earlier_new = (j < first_new) | (ids[j] < ids[i])
    hit = similar & not_source & earlier_new
    found = pl.DataFrame(
        {DOC_ID: ids[i[hit]].tolist(), "duplicate_of": ids[j[hit]].tolist()},
        schema={DOC_ID: pl.String, "duplicate_of": pl.String},
    )
    return found.group_by(DOC_ID).agg(pl.col("duplicate_of").min()).sort(DOC_ID)


_LOCAL_MODELS = threading.Lock()  # one generation at a time per process: torch uses every core


def rewrite_sources(
    sources: pl.DataFrame, cfg: AugmentConfig, dst: StageDir, part: str
) -> pl.DataFrame:
    """The variants of partition `part`'s `sources` (rows as `rewrite_batch` makes them),
    rewritten `cfg.batch_docs` at a time; each batch is kept (`dst.batch`), so a killed run
    repeats at most the batch it was in."""
    starts = range(0, sources.height, cfg.batch_docs)
    paths = [dst.batch(part, i) for i in range(len(starts))]
    lock = nullcontext() if cfg.backend == "llm" else _LOCAL_MODELS
    with StageProgress(f"augment-{part}", len(paths), "batches") as progress:
        for done, (start, path) in enumerate(zip(starts, paths, strict=True), 1):
            keep_once(path, partial(_rewrite, sources.slice(start, cfg.batch_docs), cfg, lock))
            progress.update(done)
    return pl.concat([read_frame(p) for p in paths]) if paths else _no_variants()


def _rewrite(batch: pl.DataFrame, cfg: AugmentConfig, lock: AbstractContextManager) -> pl.DataFrame:
    with lock:
        return rewrite_batch(batch, _backend(cfg), cfg)


def _backend(cfg: AugmentConfig) -> Backend:
    with serial_imports():  # torch and spaCy, where a model runs
        from tasks.augment.backends import make_backend
    return make_backend(cfg)


def _no_variants() -> pl.DataFrame:
    columns = (AUGMENTED_FROM, TEXT, AUGMENT_METHOD, AUGMENT_MODEL, "error")
    return pl.DataFrame(schema={**dict.fromkeys(columns, pl.String), "variant": pl.Int64})


def variant_scores(
    sources: pl.DataFrame, generated: pl.DataFrame, kept: pl.DataFrame
) -> dict[str, float]:
    """chrF and corpus BLEU (sacrebleu) against their `sources` (doc_id, text) of the
    `generated` and of the `kept` variants (augmented_from, text)."""
    scores: dict[str, float] = {}
    for name, df in (("generated", generated), ("kept", kept)):
        pairs = df.join(sources, left_on=AUGMENTED_FROM, right_on=DOC_ID, suffix="_source")
        hyp, ref = pairs[TEXT].to_list(), pairs[f"{TEXT}_source"].to_list()
        scores[f"{name}_bleu"] = round(bleu(hyp, ref), 2)
        scores[f"{name}_chrf_mean"] = round(float(np.mean(chrf(hyp, ref))) if hyp else 0.0, 2)
    return scores


def add_variants(
    kept: pl.DataFrame, new: pl.DataFrame, rejected: pl.DataFrame, dups: pl.DataFrame
) -> StageResult:
    """The partition's documents, then its vetted `new` ones that `dups` (doc_id,
    duplicate_of) does not list; removed: the `rejected` variants' ledger rows, then those."""
    marked = new.join(dups, on=DOC_ID, how="left")
    rule = Rule(NEAR_DUPLICATE, pl.col("duplicate_of").is_not_null(), pl.col("duplicate_of"))
    vetted = apply_rules(marked, STAGE, [rule])
    return StageResult(
        pl.concat([kept, vetted.kept.drop("duplicate_of")], how="diagonal_relaxed"),
        pl.concat([rejected, vetted.removed], how="diagonal_relaxed"),
    )


@task(name="augment-select")
def select_sources(src: StageDir, dst: StageDir, parts: list[str], cfg: AugmentConfig) -> int:
    """Choose the documents to rewrite over the whole run (seeded, so every run chooses the
    same ones); keep them with their partition. Returns how many."""

    def chosen() -> pl.DataFrame:
        found = [eligible(read_frame(src.kept(p)), cfg).with_columns(part=pl.lit(p)) for p in parts]
        return choose(pl.concat(found) if found else pl.DataFrame(), cfg).select(DOC_ID, "part")

    keep_once(dst.selection, chosen)
    return read_frame(dst.selection).height


@task(name="augment-generate")
def generate_variants(
    part: str, src: StageDir, dst: StageDir, cfg: AugmentConfig, vet: Vetting
) -> int:
    """Rewrite this partition's chosen documents (`rewrite_sources`), then vet the variants
    (`vet_documents`) into `dst.variants`. Returns the variants made."""

    def variants() -> pl.DataFrame:
        chosen = read_frame(dst.selection).filter(pl.col("part") == part)[DOC_ID]
        sources = read_frame(src.kept(part)).filter(pl.col(DOC_ID).is_in(chosen.implode()))
        return _as_documents(sources, rewrite_sources(sources, cfg, dst, part))

    vetting = partial(vet_documents, cfg=cfg, vet=vet)
    return run_partition(None, dst.variants, part, vetting, read=variants).n_in


@task(name="augment-near-duplicates")
def find_near_duplicates(src: StageDir, dst: StageDir, parts: list[str], cfg: MinhashConfig):
    """Find the new documents that are near-duplicates of what is kept (see
    `near_duplicates`), over the whole run."""

    def found() -> pl.DataFrame:
        kept = pl.concat([read_frame(src.kept(p)).select(DOC_ID, TEXT) for p in parts])
        new = [read_frame(dst.variants.kept(p)).select(DOC_ID, AUGMENTED_FROM, TEXT) for p in parts]
        return near_duplicates(kept, pl.concat(new), cfg)

    keep_once(dst.near_duplicates, found)


@task(name="augment-scores")
def score_variants(src: StageDir, dst: StageDir, parts: list[str]) -> dict[str, float]:
    """chrF and corpus BLEU (sacrebleu) of the variants against their sources: all that were
    generated, and those kept (vetted, not near-duplicates)."""
    sources = pl.concat([read_frame(src.kept(p)).select(DOC_ID, TEXT) for p in parts])
    made = [read_frame(path) for p in parts for path in dst.batches(p)]
    generated = pl.concat(made).filter(pl.col(TEXT).is_not_null()) if made else _no_variants()
    dups = read_frame(dst.near_duplicates)[DOC_ID]
    kept = pl.concat([read_frame(dst.variants.kept(p)) for p in parts])
    kept = kept.filter(~pl.col(DOC_ID).is_in(dups.implode())).select(AUGMENTED_FROM, TEXT)
    return variant_scores(sources, generated, kept)


@task(name="augment")
def augment(part: str, src: StageDir, dst: StageDir) -> StageStats:
    """The partition's documents, then its new documents that are not near-duplicates."""

    def add(kept: pl.DataFrame) -> StageResult:
        new, rejected = read_frame(dst.variants.kept(part)), read_frame(dst.variants.ledger(part))
        return add_variants(kept, new, rejected, read_frame(dst.near_duplicates))

    return run_partition(src, dst, part, add, adds=True)
