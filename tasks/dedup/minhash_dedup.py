"""MinHash near-duplicate removal, as four steps the flow spreads over workers.

In: doc_id, text (and `cluster_size` from exact dedup). Out: the same rows, less
near-duplicates (dropped with `duplicate_of`), and `cluster_size`: how many input documents
the kept one stands for, so a trainer can re-weight duplicated content later.

1. sign (map, per partition): MinHash signatures (`tasks/dedup/minhash_sketch.py`), written
   uncompressed (`StageDir.keys`) so later steps memory-map them; then the LSH band keys as
   entries sorted by key (`StageDir.bands`), so that any range of keys is one slice.
2. buckets (reduce, one task per range of band-key values): the buckets of every band whose
   key falls in the task's range give candidate pairs, verified against the threshold by
   estimated Jaccard (`tasks/dedup/minhash_cluster.py`). Pairs whose documents fastText puts
   in different languages are translations, not duplicates, and are dropped (only pairs
   under 0.8 similarity are checked). Connected components over the range's pairs are
   written as a component map (each document and the smallest ref it is joined to).
3. cluster (reduce, once): the ranges' maps, merged one at a time, give the clusters: the
   same whatever the number of ranges, since a bucket lies in one range. The kept document
   of each is the one with the highest quality score (the share of Gopher rules its first and
   last 300 characters pass), then the smallest doc_id (`tasks/dedup/minhash_members.py`).
   Only the text of documents in clusters is read, one partition at a time.
4. filter (map, per partition): drop the others with `duplicate_of`.
No step holds the run's text. A bucket task reads only its range's entries, at most 512 MB of
them at a time; the cluster step holds a label per document in a cluster.
"""

import functools
import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from prefect import task
from pydantic import BaseModel, Field, model_validator

from shards.reader import (
    key_range,
    read_frame,
    read_key_range,
    read_table,
    sorted_rows,
    sorted_table,
)
from shards.schema import CLUSTER_SIZE, DOC_ID, TEXT
from shards.workdir import StageDir
from tasks.dedup.minhash_cluster import (
    SignatureStore,
    band_keys,
    bucket_pairs,
    connected_components,
    mapped_matrix,
    pair_similarity,
    refs_of,
    split_refs,
    unique_pairs,
)
from tasks.dedup.minhash_members import (
    ClusterInputs,
    keeper_scores,
    keepers,
    per_partition,
    same_language,
)
from tasks.dedup.minhash_sketch import signatures
from tasks.filter.langid import LangIdConfig
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
# A bucket task holds this many bytes of its range's band entries at a time: key, band, row
# and anchor key as read (22 bytes an entry), the ref made from the row, and the copies made
# to gather them from every partition and split them by band (60 bytes in all, measured).
_BUCKET_BYTES = 512 << 20
_HELD_PER_ENTRY = 60
_MIN_PIECE_ENTRIES = 4096  # fewer is not worth a read of every partition's footer


def doc_keys(doc_ids: pl.Series) -> np.ndarray:
    """A 64-bit hash of each doc_id: which bucket member anchors its pairs."""
    return doc_ids.hash(0xA4C409).to_numpy()


def sign(df: pl.DataFrame, cfg: MinhashConfig) -> pa.Table:
    """Signatures and keeper inputs of one partition's rows (its band keys: `band_entries`)."""
    sigs = signatures(df[TEXT].to_arrow(), cfg.num_perm, cfg.seed, cfg.ngram, cfg.char_ngram)
    weight = df[CLUSTER_SIZE] if CLUSTER_SIZE in df.columns else pl.repeat(1, df.height, eager=True)
    columns = {
        DOC_ID: df[DOC_ID].to_arrow(),
        "doc_key": pa.array(doc_keys(df[DOC_ID])),
        "weight": pl.Series(weight).cast(pl.UInt32).to_arrow(),
        "empty": pa.array((sigs == np.uint32(0xFFFFFFFF)).all(axis=1)),
        "signature": pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel()), cfg.num_perm),
    }
    return pa.table(columns)


def band_entries(keys: np.ndarray, signed: np.ndarray, doc_key: np.ndarray) -> pa.Table:
    """One entry per signed document and band (`key`, `band`, `row`, `doc_key`), sorted by
    key: a hash range of keys is then one slice of a partition's entries, whatever the
    number of ranges, and a reduce task reads only its own."""
    rows = np.flatnonzero(signed).astype(np.uint32)
    n_bands = keys.shape[1]
    key = keys[rows].ravel()  # document by document, band by band
    band = np.tile(np.arange(n_bands, dtype=np.uint16), len(rows))
    row = np.repeat(rows, n_bands)
    order = np.lexsort((row, band, key))
    table = pa.table({"key": key[order], "band": band[order], "row": row[order],
                      "doc_key": doc_key[row[order]]})  # fmt: skip
    return sorted_table(table, "key")


def entries_of(keys_file: Path, cfg: MinhashConfig) -> pa.Table:
    """The band entries of a partition, from the signatures of its keys file."""
    table = read_table(keys_file, ["doc_key", "empty"])
    sigs = mapped_matrix(keys_file, "signature")
    keys = band_keys(sigs, *cfg.lsh_params())
    return band_entries(keys, ~column(table, "empty"), column(table, "doc_key"))


def range_pairs(
    keys_files: list[Path], bands_files: list[Path], index: int, ranges: int, cfg: MinhashConfig
) -> pl.DataFrame:
    """Candidate pairs (refs `a`, `b`) of every band's buckets whose key is in hash range
    `index` of `ranges`, with their estimated similarity `sim`; those below the threshold are
    left out unless `cfg.verify` is off.

    Each partition's entries of the range are one slice of its bands file. The range is
    taken in as many pieces as keep the entries held under `_BUCKET_BYTES`; a bucket (one
    key of one band) lies in one piece.
    """
    if not bands_files:
        return pl.DataFrame(schema={"a": pl.UInt64, "b": pl.UInt64, "sim": pl.Float32})
    lo, hi = key_range(index, ranges)
    expected = sum(sorted_rows(p) for p in bands_files) * (hi - lo) / 2**64
    pieces = max(1, min(math.ceil(expected * _HELD_PER_ENTRY / _BUCKET_BYTES),
                        math.ceil(expected / _MIN_PIECE_ENTRIES)))  # fmt: skip
    found = [np.empty((0, 2), np.uint64)]
    for k in range(pieces):
        a, b = lo + (hi - lo) * k // pieces, lo + (hi - lo) * (k + 1) // pieces
        tables = [read_key_range(p, a, b, ["key", "band", "row", "doc_key"]) for p in bands_files]
        key, band, doc_key = (
            np.concatenate([column(t, c) for t in tables]) for c in ("key", "band", "doc_key")
        )
        refs = np.concatenate([refs_of(i, column(t, "row")) for i, t in enumerate(tables)])
        by_band = np.argsort(band, kind="stable")  # a radix sort: then one slice per band
        ends = np.searchsorted(band[by_band], np.arange(band.max(initial=0) + 2))
        for lo_i, hi_i in itertools.pairwise(ends.tolist()):
            one = by_band[lo_i:hi_i]
            found.append(bucket_pairs(key[one], doc_key[one], refs[one]))
        # A pair is found in most bands: keep each once before the next piece.
        found = [unique_pairs(np.concatenate(found))]
    pairs = found[0]
    sim = pair_similarity(pairs, SignatureStore.open(keys_files))
    keep = sim >= cfg.threshold if cfg.verify else np.ones(len(pairs), dtype=bool)
    return pl.DataFrame({"a": pairs[keep, 0], "b": pairs[keep, 1], "sim": sim[keep]})


def column(table: pa.Table, name: str) -> np.ndarray:
    """One column as a numpy array (a view of a memory-mapped file where it can be)."""
    return table.column(name).to_numpy()


COMPONENTS = {"ref": pl.UInt64, "label": pl.UInt64}


def range_components(
    index: int, ranges: int, cfg: MinhashConfig, at: ClusterInputs
) -> pl.DataFrame:
    """`ref` and `label` (the smallest ref it is joined to) of every document in a pair of
    hash range `index` of `ranges` that passes verification and the language check."""
    keys, bands = [at.out.keys(p) for p in at.parts], [at.out.bands(p) for p in at.parts]
    pairs = range_pairs(keys, bands, index, ranges, cfg)
    if cfg.same_language and pairs.height:
        pairs = pairs.filter(same_language(pairs, at))
    nodes, labels = connected_components(pairs.select("a", "b").to_numpy().astype(np.uint64))
    return pl.DataFrame({"ref": nodes, "label": labels}, schema=COMPONENTS)


def merge_components(maps: Iterable[pl.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """The components of the ranges' maps joined, one map at a time: each is merged into the
    components so far, so only one map and one label per document are held at once.

    Returns:
        Every document in a map (sorted) and its label, the smallest ref it is joined to.
    """
    nodes = labels = np.empty(0, np.uint64)
    for found in maps:
        edges = [np.stack([nodes, labels], axis=1), found.select("ref", "label").to_numpy()]
        nodes, labels = connected_components(np.concatenate(edges).astype(np.uint64))
    return nodes, labels


def find_clusters(
    maps: Iterable[pl.DataFrame], cfg: MinhashConfig, at: ClusterInputs
) -> pl.DataFrame:
    """`part`, `row`, `duplicate_of` and `cluster_size` of every member of a cluster, in
    partition and row order.

    Args:
        maps: `ref`, `label` rows of each range's component map.
    """
    schema = {"part": pl.String, "row": pl.UInt32, "duplicate_of": pl.String,
              CLUSTER_SIZE: pl.UInt32}  # fmt: skip
    nodes, labels = merge_components(maps)
    if len(nodes) == 0:
        return pl.DataFrame(schema=schema)
    meta = pl.concat(per_partition(
        nodes, at, lambda part, rows: read_frame(at.out.keys(part), [DOC_ID, "weight"])[rows]
    ))  # fmt: skip
    if cfg.keep == "quality":
        score = keeper_scores(nodes, at)
    else:
        score = pl.repeat(0.0, len(nodes), dtype=pl.Float32, eager=True)
    table = meta.with_columns(ref=pl.Series(nodes), label=pl.Series(labels), score=score)
    chosen = keepers(table)
    part_of, row_of = split_refs(chosen["ref"].to_numpy())
    return (
        chosen.select(
            part=pl.Series(np.asarray(at.parts)[part_of]),
            row=pl.Series(row_of, dtype=pl.UInt32),
            duplicate_of=pl.col("duplicate_of"),
            cluster_size=pl.col("cluster_size"),
        )
        .cast(schema)
        .sort("part", "row")
    )


@task(name="minhash_signatures")
def sign_partitions(parts: list[str], src: StageDir, out: StageDir, cfg: MinhashConfig) -> None:
    """Write the signatures, then the band entries, of each partition of `parts`."""
    reads = [functools.partial(read_kept, src, part) for part in parts]
    keep_each([out.keys(part) for part in parts], reads, lambda df: sign(df, cfg), None)
    for part in parts:
        keep_once(out.bands(part), functools.partial(entries_of, out.keys(part), cfg), None)


@task(name="minhash_buckets")
def bucket_range(at: ClusterInputs, index: int, ranges: int, cfg: MinhashConfig) -> None:
    """Write the component map of hash range `index` of `ranges` (once per range)."""
    keep_once(at.out.components_range(index, ranges),
              lambda: range_components(index, ranges, cfg, at))  # fmt: skip


@task(name="minhash_cluster")
def cluster_ranges(at: ClusterInputs, ranges: int, cfg: MinhashConfig) -> None:
    """Find the clusters of the whole run from the ranges' maps (once; `out.duplicates`)."""

    def clusters() -> pl.DataFrame:
        maps = (read_frame(at.out.components_range(i, ranges)) for i in range(ranges))
        return find_clusters(maps, cfg, at)

    keep_once(at.out.duplicates, clusters)


@task(name="minhash")
def minhash_dedup(parts: list[str], src: StageDir, out: StageDir) -> StageStats:
    """Drop the near-duplicates found in the partitions of `parts`."""
    drop = drop_found(out.duplicates, STAGE, DUPLICATE)
    return run_partitions(src, out, parts, drop, named=True)
