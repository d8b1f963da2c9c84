"""MinHash near-duplicate removal.

In: doc_id, text. Out: the same rows, less near-duplicates (dropped with `duplicate_of`).
Three steps, like exact dedup: signatures per partition (map), LSH buckets and connected
components over the whole run (reduce, on signatures only, never text), and the drop (map).
Signatures equal those of `datasketch.MinHash(num_perm, seed, hashfunc=hash_shingle)` (its
default "affine32" scheme) fed the same shingles. Word n-grams are used for scripts written
with spaces, character n-grams for Chinese, Japanese, Thai and other scripts without them.
"""

import re

import numpy as np
import polars as pl
import xxhash
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from prefect import task
from pydantic import BaseModel, Field, model_validator

from shards.reader import read_frame
from shards.schema import DOC_ID, TEXT
from shards.writer import write_table
from tasks.partition import StageDir, run_partition
from tasks.records import StageStats, drop_duplicates

STAGE = "minhash"


class MinhashConfig(BaseModel, frozen=True, extra="forbid"):
    """MinHash + LSH parameters; `bands` x `rows` come from the threshold unless both are set."""

    enabled: bool = True
    threshold: float = Field(0.8, gt=0, lt=1)
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int = Field(5, ge=1, description="word n-gram size for spaced scripts")
    char_ngram: int = Field(5, ge=1, description="character n-gram size for unspaced scripts")
    seed: int = 1
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    verify: bool = True

    @model_validator(mode="after")
    def _bands_fit(self) -> "MinhashConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both `bands` and `rows`, or neither")
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            raise ValueError(f"`bands` x `rows` must be at most `num_perm` ({self.num_perm})")
        return self

    def lsh_params(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)


DUPLICATE = "minhash_duplicate"

_SCHEME = "affine32"  # datasketch's default: fmix32 pre-mix, then a * h + b mod 2^32
_MAX_HASH = np.uint32((1 << 32) - 1)
_UNSPACED = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]"
)
_PUNCT = re.compile(r"[^\w\s]+")


def shingles(text: str, ngram: int, char_ngram: int) -> list[bytes]:
    """Lower-cased, punctuation-free n-grams: words, or characters for unspaced scripts."""
    text = _PUNCT.sub(" ", text.lower())
    unspaced = len(_UNSPACED.findall(text)) > 0.3 * max(1, len(text) - text.count(" "))
    if unspaced:
        chars = "".join(text.split())
        n = min(char_ngram, max(1, len(chars)))
        grams = {chars[i : i + n] for i in range(len(chars) - n + 1)}
    else:
        words = text.split()
        n = min(ngram, max(1, len(words)))
        grams = {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}
    return [g.encode() for g in sorted(grams)]


def hash_shingle(shingle: bytes) -> int:
    """The 32-bit hash MinHash permutes (pass as datasketch's `hashfunc` to compare)."""
    return xxhash.xxh32_intdigest(shingle)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (uint32 arithmetic wraps, as intended)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signatures(texts: list[str], cfg: MinhashConfig) -> np.ndarray:
    """MinHash signatures, (n_docs, num_perm) uint32, as datasketch computes them."""
    a, b = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme=_SCHEME).permutations
    out = np.full((len(texts), cfg.num_perm), _MAX_HASH, dtype=np.uint32)
    for i, text in enumerate(texts):
        grams = shingles(text, cfg.ngram, cfg.char_ngram)
        if grams:
            hv = fmix32(np.array([hash_shingle(g) for g in grams], dtype=np.uint32))[:, None]
            out[i] = (hv * a + b).min(axis=0)  # (S, num_perm) -> (num_perm,)
    return out


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit bucket key per document and band, (n_docs, bands)."""
    keys = np.zeros((sigs.shape[0], bands), dtype=np.uint64)
    for r in range(rows):  # polynomial mix; uint64 arithmetic wraps, which is what we want
        keys = keys * np.uint64(0x9E3779B97F4A7C15) + sigs[:, r::rows][:, :bands].astype(np.uint64)
    return keys


def candidate_pairs(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Pairs (i, j), i < j, sharing at least one LSH bucket; (n_pairs, 2)."""
    keys = band_keys(sigs[:, : bands * rows], bands, rows)
    buckets = pl.DataFrame(
        {
            "band": np.repeat(np.arange(bands), len(sigs)),
            "key": keys.T.ravel(),
            "doc": np.tile(np.arange(len(sigs)), bands),
        }
    )
    pairs = (
        buckets.with_columns(first=pl.col("doc").min().over("band", "key"))
        .filter(pl.col("doc") != pl.col("first"))
        .select("first", "doc")
        .unique()
        .sort("first", "doc")
    )
    return pairs.to_numpy()


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component label (the smallest member index) of each of n nodes."""
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(x) for x in range(n)])


def find_clusters(keys: pl.DataFrame, cfg: MinhashConfig) -> pl.DataFrame:
    """Near-duplicate rows to drop: all but the smallest doc_id of each cluster.

    Args:
        keys: `part`, `row`, doc_id and `signature` of every document of the run.

    Returns:
        `part`, `row` and `duplicate_of` for every row to drop.
    """
    keys = keys.sort(DOC_ID, "part", "row")  # index order = keeper preference
    sigs = np.asarray(keys["signature"].to_list(), dtype=np.uint32).reshape(keys.height, -1)
    pairs = candidate_pairs(sigs, *cfg.lsh_params())
    if cfg.verify and len(pairs):
        similarity = (sigs[pairs[:, 0]] == sigs[pairs[:, 1]]).mean(axis=1)
        pairs = pairs[similarity >= cfg.threshold]
    cluster = connected_components(keys.height, pairs)
    doc_ids = keys[DOC_ID].to_numpy()
    return (
        keys.with_columns(duplicate_of=pl.Series(doc_ids[cluster]), _c=pl.Series(cluster))
        .filter(pl.col("_c") != pl.int_range(pl.len()))
        .select("part", pl.col("row").cast(pl.UInt32), "duplicate_of")
    )


@task(name="minhash_signatures")
def sign_partition(part: str, src: StageDir, out: StageDir, cfg: MinhashConfig) -> None:
    """Write the MinHash signatures of one partition."""
    if out.keys(part).exists():
        return
    df = read_frame(src.kept(part), [DOC_ID, TEXT])
    sigs = signatures(df[TEXT].to_list(), cfg)
    keys = df.select(DOC_ID).with_columns(
        signature=pl.Series(sigs.tolist(), dtype=pl.Array(pl.UInt32, cfg.num_perm))
    )
    write_table(keys.to_arrow(), out.keys(part))


@task(name="minhash_cluster")
def cluster_signatures(out: StageDir, parts: list[str], cfg: MinhashConfig) -> None:
    """Find the near-duplicate clusters of the whole run (once; kept as `duplicates.arrow`)."""
    if not out.duplicates.exists():
        write_table(find_clusters(out.all_keys(parts), cfg).to_arrow(), out.duplicates)


@task(name="minhash")
def minhash_dedup(part: str, src: StageDir, out: StageDir) -> StageStats:
    """Drop the near-duplicates found in one partition."""
    dups = read_frame(out.duplicates).filter(pl.col("part") == part).drop("part")
    return run_partition(src, out, part, lambda df: drop_duplicates(df, dups, STAGE, DUPLICATE))
