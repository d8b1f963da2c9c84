"""The members of MinHash's candidate pairs and clusters, read one partition at a time: the
language check of a range's pairs and the choice of each cluster's kept document.

A document is named by its ref (`tasks/dedup/minhash_cluster.py`); its text is read from the
stage's input rows, its doc_id and weight from its partition's keys file.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from shards.schema import DOC_ID, LANG, TEXT
from shards.workdir import StageDir
from tasks.dedup.minhash_cluster import split_refs
from tasks.filter.langid import LangIdConfig, identify, load_model
from tasks.filter.quality import quality_score
from tasks.partition import read_kept

T = TypeVar("T")

LANG_CHARS = 200  # enough text to tell two languages apart
_LANG_CFG = LangIdConfig(segment_chars=LANG_CHARS, segment_max=LANG_CHARS, max_segments=1)
# Pairs this similar share most of their wording: no translation does, so fastText is asked
# only about the pairs below it.
SURE_SAME_LANGUAGE = 0.8
# Near-duplicates differ most in their headers and footers: score the first and last 300
# characters, enough to tell a clean page from a boilerplate-laden copy.
SCORE_CHARS = 600


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
    """Where the bucket and cluster steps read from, and the configs that choose kept
    documents."""

    src: StageDir
    out: StageDir
    parts: list[str]
    langid: LangIdConfig


def per_partition(
    refs: np.ndarray, at: ClusterInputs, read: Callable[[str, pl.Series], T]
) -> list[T]:
    """`read(part, rows)` of the documents `refs` (sorted, not empty), one partition at a
    time: concatenated, the results follow `refs`."""
    part_of, row_of = split_refs(refs)
    return [read(at.parts[p], pl.Series("row", row_of[part_of == p], pl.UInt32))
            for p in np.unique(part_of)]  # fmt: skip


def languages(refs: np.ndarray, at: ClusterInputs) -> pl.Series:
    """fastText's language of each of the documents `refs` (sorted), from their opening."""
    model = load_model(at.langid.model)

    def read(part: str, rows: pl.Series) -> pl.Series:
        text = read_kept(at.src, part, [TEXT])[rows][TEXT]
        return identify(text, model, _LANG_CFG)[LANG]

    return pl.concat(per_partition(refs, at, read))


def keeper_scores(refs: np.ndarray, at: ClusterInputs) -> pl.Series:
    """The quality score of each of the documents `refs` (sorted): the share of Gopher rules
    their first and last `SCORE_CHARS // 2` characters pass."""

    def read(part: str, rows: pl.Series) -> pl.Series:
        text = read_kept(at.src, part, [TEXT])[rows][TEXT]
        ends = text.str.head(SCORE_CHARS // 2) + "\n" + text.str.tail(SCORE_CHARS // 2)
        short = text.str.len_chars() <= SCORE_CHARS
        return quality_score(pl.DataFrame({TEXT: ends.zip_with(~short, text)})).cast(pl.Float32)

    return pl.concat(per_partition(refs, at, read))


def same_language(pairs: pl.DataFrame, at: ClusterInputs) -> pl.Series:
    """Per pair: sure to be one language (similar enough), or labelled so by fastText."""
    sure = pairs["sim"] >= SURE_SAME_LANGUAGE
    ends = pairs.filter(~sure).select("a", "b").to_numpy()
    if ends.size == 0:
        return sure
    check = np.unique(ends)
    lang = languages(check, at)
    a = lang.gather(np.searchsorted(check, pairs["a"].to_numpy()).clip(0, len(check) - 1))
    b = lang.gather(np.searchsorted(check, pairs["b"].to_numpy()).clip(0, len(check) - 1))
    return sure | (a == b).fill_null(False)
