"""MinHash near-duplicate removal, as four steps the flow spreads over workers.

In: doc_id, text (and `cluster_size` from exact dedup). Out: the same rows, less
near-duplicates (dropped with `duplicate_of`), and `cluster_size`: how many input documents
the kept one stands for, so a trainer can re-weight duplicated content later.

1. sign (map, per partition): MinHash signatures (`tasks/dedup/minhash_sketch.py`) and LSH band
   keys, written uncompressed (`StageDir.keys`) so later steps memory-map them.
2. pairs (reduce, per group of bands): buckets of each band give candidate pairs, verified
   against the threshold by estimated Jaccard (`tasks/dedup/minhash_cluster.py`).
3. cluster (reduce): pairs whose documents fastText puts in different languages are
   translations, not duplicates, and are dropped (only pairs under 0.8 similarity are
   checked); connected components over the rest are the clusters. The kept document of each
   is the one with the highest quality score (the share of Gopher rules its first and last
   300 characters pass), then the smallest doc_id. Only the text of documents in pairs is
   read, one partition at a time.
4. filter (map, per partition): drop the others with `duplicate_of`.
No step holds the run's text, and only step 2 touches every signature, one band at a time.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from prefect import task
from pydantic import BaseModel, Field, model_validator

from shards.reader import read_frame, read_table
from shards.schema import CLUSTER_SIZE, DOC_ID, LANG, TEXT
from shards.workdir import StageDir
from tasks.dedup.minhash_cluster import (
    SignatureStore,
    band_keys,
    bucket_pairs,
    connected_components,
    make_refs,
    pair_similarity,
    split_refs,
)
from tasks.dedup.minhash_sketch import signatures
from tasks.filter.langid import LangIdConfig, identify, load_model
from tasks.filter.quality import quality_score
from tasks.lazy import serial_imports
from tasks.partition import drop_found, keep_each, keep_once, read_kept, run_partitions
from tasks.records import StageStats

STAGE = "minhash"


class MinhashConfig(BaseModel, frozen=True, extra="forbid"):
    """MinHash + LSH parameters; `bands` x `rows` come from the threshold unless both are set.

    The defaults catch copies with up to about 10 % of their words edited (word 3-grams,
    Jaccard 0.5) while leaving distinct documents alone; see bench/dedup.py.
    """

    enabled: bool = True
    threshold: float = Field(0.5, gt=0, lt=1, description="Jaccard similarity of duplicates")
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int = Field(3, ge=1, description="words per shingle for spaced scripts")
    char_ngram: int = Field(3, ge=1, description="characters per shingle for unspaced scripts")
    seed: int = 1
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    verify: bool = Field(True, description="drop candidate pairs below the threshold")
    keep: Literal["quality", "doc_id"] = "quality"
    same_language: bool = Field(True, description="pairs in two languages are not duplicates")
    band_tasks: int = Field(4, ge=1, description="parallel tasks of the bucket step")

    @model_validator(mode="after")
    def _bands_fit(self) -> "MinhashConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both `bands` and `rows`, or neither")
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            raise ValueError(f"`bands` x `rows` must be at most `num_perm` ({self.num_perm})")
        return self

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): as set, else datasketch's choice for the threshold.

        False negatives weigh more than false positives because verification removes the
        latter.
        """
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm, self.verify)

    def band_groups(self) -> list[list[int]]:
        """The bands, split into `band_tasks` groups."""
        bands = self.lsh_params()[0]
        return [g.tolist() for g in np.array_split(np.arange(bands), self.band_tasks) if len(g)]


def stage_key(cfg: MinhashConfig, langid: LangIdConfig) -> dict:
    """What the stage's results depend on, for its work directory's fingerprint: its config,
    the language model it uses, and the polars version (its string hash shapes the shingle
    hashes and anchors). The keeper's quality score uses the default thresholds, so changing
    the quality stage's leaves this stage as it was."""
    key: dict = {"config": cfg.model_dump(mode="json"), "polars": pl.__version__}
    if cfg.same_language:
        key["langid_model"] = langid.model
    return key


@functools.cache
def optimal_bands(threshold: float, num_perm: int, verify: bool) -> tuple[int, int]:
    """datasketch's (bands, rows) for `threshold`, weighing false negatives more when pairs
    are verified (verification removes false positives)."""
    with serial_imports():
        from datasketch.lsh import _optimal_param

    weights = (0.1, 0.9) if verify else (0.5, 0.5)
    return _optimal_param(threshold, num_perm, *weights)


DUPLICATE = "minhash_duplicate"
LANG_CHARS = 200  # enough text to tell two languages apart
_LANG_CFG = LangIdConfig(segment_chars=LANG_CHARS, segment_max=LANG_CHARS, max_segments=1)
# Pairs this similar share most of their wording: no translation does, so fastText is asked
# only about the pairs below it.
SURE_SAME_LANGUAGE = 0.8
# Near-duplicates differ most in their headers and footers: score the first and last 300
# characters, enough to tell a clean page from a boilerplate-laden copy.
SCORE_CHARS = 600


def doc_keys(doc_ids: pl.Series) -> np.ndarray:
    """A 64-bit hash of each doc_id: which bucket member anchors its pairs."""
    return doc_ids.hash(0xA4C409).to_numpy()


def sign(df: pl.DataFrame, cfg: MinhashConfig) -> pa.Table:
    """Signatures, band keys and keeper inputs of one partition's rows."""
    sigs = signatures(df[TEXT].to_arrow(), cfg.num_perm, cfg.seed, cfg.ngram, cfg.char_ngram)
    bands, rows = cfg.lsh_params()
    keys = band_keys(sigs, bands, rows)
    weight = df[CLUSTER_SIZE] if CLUSTER_SIZE in df.columns else pl.repeat(1, df.height, eager=True)
    columns = {
        DOC_ID: df[DOC_ID].to_arrow(),
        "doc_key": pa.array(doc_keys(df[DOC_ID])),
        "weight": pl.Series(weight).cast(pl.UInt32).to_arrow(),
        "empty": pa.array((sigs == np.uint32(0xFFFFFFFF)).all(axis=1)),
        "signature": pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel()), cfg.num_perm),
    }
    columns |= {f"band{b:03d}": pa.array(keys[:, b]) for b in range(bands)}
    return pa.table(columns)


def band_pairs(keys_files: list[Path], bands: list[int], cfg: MinhashConfig) -> pl.DataFrame:
    """Candidate pairs (refs `a`, `b`) from `bands` with their estimated similarity `sim`;
    those below the threshold are left out unless `cfg.verify` is off."""
    names = [f"band{b:03d}" for b in bands]
    tables = [read_table(f, ["doc_key", "empty", *names]) for f in keys_files]  # mapped locally
    refs = np.concatenate([make_refs(i, t.num_rows) for i, t in enumerate(tables)])
    doc_key = np.concatenate([column(t, "doc_key") for t in tables])
    signed = ~np.concatenate([column(t, "empty") for t in tables])
    found = [np.empty((0, 2), np.uint64)]
    for name in names:
        keys = np.concatenate([column(t, name) for t in tables])
        found.append(bucket_pairs(keys[signed], doc_key[signed], refs[signed]))
    pairs = np.unique(np.concatenate(found), axis=0)
    sim = pair_similarity(pairs, SignatureStore.open(keys_files))
    keep = sim >= cfg.threshold if cfg.verify else np.ones(len(pairs), dtype=bool)
    return pl.DataFrame({"a": pairs[keep, 0], "b": pairs[keep, 1], "sim": sim[keep]})


def column(table: pa.Table, name: str) -> np.ndarray:
    """One column as a numpy array (a view of a memory-mapped file where it can be)."""
    return table.column(name).to_numpy()


def keepers(members: pl.DataFrame) -> pl.DataFrame:
    """Choose each cluster's kept document: highest `score`, then smallest doc_id.

    Args:
        members: `ref`, `label` (cluster), doc_id, `weight` and `score` of cluster members.

    Returns:
        `ref`, `duplicate_of` (null for the kept one) and `cluster_size` (summed weights).
    """
    ranked = members.sort("label", pl.col("score"), DOC_ID, "ref",
                          descending=[False, True, False, False])  # fmt: skip
    return ranked.select(
        "ref",
        duplicate_of=pl.when(pl.int_range(pl.len()).over("label") > 0)
        .then(pl.col(DOC_ID).first().over("label"))
        .otherwise(None),
        cluster_size=pl.col("weight").sum().over("label").cast(pl.UInt32),
    )


@dataclass(frozen=True)
class ClusterInputs:
    """Where the cluster step reads from, and the configs that choose kept documents."""

    src: StageDir
    out: StageDir
    parts: list[str]
    langid: LangIdConfig


def member_table(
    nodes: np.ndarray, needs_lang: np.ndarray, cfg: MinhashConfig, at: ClusterInputs
) -> pl.DataFrame:
    """doc_id, weight, keeper score and (where `needs_lang`) language of the documents in
    pairs (`nodes`, sorted): their rows are read one partition at a time, then scored and
    identified in one call each, whatever the number of partitions."""
    part_of, row_of = split_refs(nodes)
    metas, texts = [], []
    for p in np.unique(part_of):
        here = part_of == p
        rows = pl.Series("row", row_of[here], pl.UInt32)
        metas.append(read_frame(at.out.keys(at.parts[p]), [DOC_ID, "weight"])[rows])
        if cfg.keep == "quality" or needs_lang[here].any():
            texts.append(read_frame(at.src.kept(at.parts[p]), [TEXT])[rows][TEXT])
        else:
            texts.append(pl.repeat(None, len(rows), dtype=pl.String, eager=True).alias(TEXT))
    text = pl.concat(texts)
    score = pl.repeat(0.0, len(nodes), dtype=pl.Float32, eager=True)
    if cfg.keep == "quality":
        ends = text.str.head(SCORE_CHARS // 2) + "\n" + text.str.tail(SCORE_CHARS // 2)
        short = text.str.len_chars() <= SCORE_CHARS
        score = quality_score(pl.DataFrame({TEXT: ends.zip_with(~short, text)}))
    lang = pl.repeat(None, len(nodes), dtype=pl.String, eager=True)
    if (check := np.flatnonzero(needs_lang)).size:
        model = load_model(at.langid.model)
        lang = lang.scatter(check, identify(text[check], model, _LANG_CFG)[LANG])
    return pl.concat(metas).with_columns(
        score=score.cast(pl.Float32), lang=lang, ref=pl.Series(nodes)
    )


def same_language(pairs: pl.DataFrame, members: pl.DataFrame) -> np.ndarray:
    """Per pair: sure to be one language (similar enough), or labelled so by fastText."""
    ref = members["ref"].to_numpy()
    lang = members["lang"]
    a = lang.gather(np.searchsorted(ref, pairs["a"].to_numpy()))
    b = lang.gather(np.searchsorted(ref, pairs["b"].to_numpy()))
    return ((pairs["sim"] >= SURE_SAME_LANGUAGE) | (a == b).fill_null(False)).to_numpy()


def find_clusters(pairs: pl.DataFrame, cfg: MinhashConfig, at: ClusterInputs) -> pl.DataFrame:
    """`part`, `row`, `duplicate_of` and `cluster_size` of every member of a cluster.

    Args:
        pairs: `a`, `b` (refs) and `sim` of the candidate pairs that passed verification, as
            the bucket step wrote them (a pair found in two band groups appears twice).
    """
    schema = {"part": pl.String, "row": pl.UInt32, "duplicate_of": pl.String,
              CLUSTER_SIZE: pl.UInt32}  # fmt: skip
    pairs = pairs.unique(["a", "b"]).sort("a", "b")
    if pairs.height == 0:
        return pl.DataFrame(schema=schema)
    ends = pairs.select("a", "b").to_numpy()
    nodes = np.unique(ends)
    unsure = cfg.same_language & (pairs["sim"] < SURE_SAME_LANGUAGE).to_numpy()
    needs_lang = np.isin(nodes, ends[unsure])
    members = member_table(nodes, needs_lang, cfg, at)
    if cfg.same_language:
        pairs = pairs.filter(pl.Series(same_language(pairs, members)))
    if pairs.height == 0:
        return pl.DataFrame(schema=schema)
    found, labels = connected_components(pairs.select("a", "b").to_numpy())
    table = members.join(pl.DataFrame({"ref": found, "label": labels}), on="ref")
    chosen = keepers(table)
    part_of, row_of = split_refs(chosen["ref"].to_numpy())
    return chosen.select(
        part=pl.Series(np.asarray(at.parts)[part_of]),
        row=pl.Series(row_of, dtype=pl.UInt32),
        duplicate_of=pl.col("duplicate_of"),
        cluster_size=pl.col("cluster_size"),
    ).cast(schema)


@task(name="minhash_signatures")
def sign_partitions(parts: list[str], src: StageDir, out: StageDir, cfg: MinhashConfig) -> None:
    """Write the signatures and band keys of each partition of `parts`."""
    reads = [functools.partial(read_kept, src, part) for part in parts]
    keep_each([out.keys(part) for part in parts], reads, lambda df: sign(df, cfg), None)


@task(name="minhash_buckets")
def find_pairs(group: int, bands: list[int], out: StageDir, parts: list[str],
               cfg: MinhashConfig) -> None:  # fmt: skip
    """Write the (verified) candidate pairs of one group of bands."""
    keep_once(out.pairs(group), lambda: band_pairs([out.keys(p) for p in parts], bands, cfg))


@task(name="minhash_cluster")
def cluster_pairs(at: ClusterInputs, cfg: MinhashConfig) -> None:
    """Find the clusters of the whole run (once; kept as `out.duplicates`)."""

    def clusters() -> pl.DataFrame:
        pairs = pl.concat([read_frame(at.out.pairs(g)) for g in range(len(cfg.band_groups()))])
        return find_clusters(pairs, cfg, at)

    keep_once(at.out.duplicates, clusters)


@task(name="minhash")
def minhash_dedup(parts: list[str], src: StageDir, out: StageDir) -> StageStats:
    """Drop the near-duplicates found in the partitions of `parts`."""
    drop = drop_found(out.duplicates, STAGE, DUPLICATE)
    return run_partitions(src, out, parts, drop, named=True)
