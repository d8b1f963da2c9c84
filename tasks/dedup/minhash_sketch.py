"""MinHash signatures of whole batches of documents, the map step of near-duplicate removal.

A document is lower-cased, every run of characters that is not a letter, digit or mark is
folded to one space, and the result is cut into tokens: words for scripts written with
spaces, characters for Chinese, Japanese, Thai and the other scripts written without them
(chosen per document by its share of such characters). A shingle is `n` consecutive tokens
(all of them for a document shorter than that). Shingle hashes are folds of token hashes,
computed over whole batches with polars and numpy, never one shingle at a time in Python.

Signatures equal those of `datasketch.MinHash(num_perm, seed, hashfunc=hash_shingle)` with
its default "affine32" scheme, fed `shingles(text, n, char_n)`: each shingle hash is pre-mixed
with MurmurHash3's finalizer, then permuted by `a * h + b mod 2^32`, and the minimum is kept.
"""

import functools
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tasks.filter.quality_units import UNSPACED_SCRIPTS
from tasks.lazy import serial_imports

UNSPACED_SHARE = 0.2  # cut into characters: documents with this share of unspaced script
_UNSPACED = rf"[{UNSPACED_SCRIPTS}]"
_NOT_WORD = r"[^\p{L}\p{N}\p{M}\s]+"  # punctuation and symbols
_TOKEN_SEED = 0x5EED
_FOLD = np.uint64(0x9E3779B97F4A7C15)
_MAX = np.uint32(0xFFFFFFFF)
# Documents per batch: small arrays are reused by the allocator instead of being faulted in
# afresh, which costs more than the arithmetic on them.
_BATCH = 1024
_CHUNK = 6144  # shingles per block of the (num_perm, block) product: about 3 MB


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, datasketch's pre-mix (uint32 arithmetic wraps)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def fold_text(texts: Sequence[str] | pa.Array) -> pl.Series:
    """Lower-case, and replace every run of punctuation and symbols by a space."""
    lowered = pl.Series(pc.utf8_lower(pa.array(texts, pa.large_string())))
    return lowered.str.replace_all(_NOT_WORD, " ")


def is_unspaced(folded: pl.Series) -> np.ndarray:
    """Per document: is it mostly written in a script without spaces between words?"""
    head = folded.str.slice(0, 1000)  # the share is stable long before the end
    chars = head.str.len_chars()
    # Unspaced scripts take 3 bytes a character in UTF-8: too few extra bytes rules them out
    # without running the regex.
    maybe = (head.str.len_bytes() - chars >= 2 * UNSPACED_SHARE * chars).to_numpy()
    out = np.zeros(len(folded), dtype=bool)
    if maybe.any():
        some = head.filter(pl.Series(maybe))
        letters = (some.str.len_chars() - some.str.count_matches(r"\s")).clip(1)
        out[maybe] = (some.str.count_matches(_UNSPACED) >= UNSPACED_SHARE * letters).to_numpy()
    return out


def tokenize(folded: pl.Series, unspaced: bool) -> tuple[pl.Series, np.ndarray]:
    """Tokens of every document, flattened in document order, and the count per document.

    Args:
        folded: Documents as `fold_text` returns them.
        unspaced: Cut them into characters rather than words.

    Returns:
        The tokens and an int64 count per document.
    """
    if unspaced:
        text = folded.str.replace_all(r"\s+", "")
        lists = text.str.split("").to_arrow()
    else:  # at any run of Unicode spaces
        text = pl.Series(pc.utf8_trim_whitespace(folded.to_arrow()))
        lists = pc.utf8_split_whitespace(text.to_arrow())
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pl.Series(pc.list_flatten(lists))
    empty = (text.str.len_bytes() == 0).to_numpy()
    if empty.any():  # a document without tokens splits to [""] (or [])
        counts[empty] = 0
        flat = flat.filter(flat != "")
    return flat, counts


def token_hashes(tokens: pl.Series) -> np.ndarray:
    """A 64-bit hash per token (polars' hash, stable for a given polars version)."""
    return tokens.hash(_TOKEN_SEED).to_numpy()


def fold_shingles(hashes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold token hashes into one 32-bit hash per shingle.

    A shingle is `n` consecutive tokens of one document (all its tokens if it has fewer);
    its hash is the low 32 bits of `f ^ (f >> 32)`, where `f = fold(h_1 .. h_k)` and `fold`
    is `acc * C + h` from 0 (uint64).

    Args:
        hashes: Token hashes (uint64), in document order.
        counts: Tokens per document.
        n: Tokens per shingle.

    Returns:
        The shingle hashes (uint32), in document order, and the shingles per document.
    """
    total = len(hashes)
    width = np.clip(counts, 1, n)  # tokens per shingle, per document
    per_doc = np.maximum(counts - width + 1, 0)
    padded = np.concatenate([hashes, np.zeros(n, np.uint64)])
    acc = padded[:total].copy()
    starts = np.cumsum(counts) - counts
    short = np.flatnonzero((width < n) & (counts > 0))  # shorter than n: one shingle each
    short_out = np.where(width[short] == 1, acc[starts[short]], np.uint64(0))
    for j in range(1, n):
        acc *= _FOLD
        acc += padded[j : total + j]
        done = width[short] == j + 1
        short_out[done] = acc[starts[short[done]]]
    acc[starts[short]] = short_out
    valid = np.ones(total, dtype=bool)  # windows that start n - 1 or more before the end
    tail = np.repeat(starts + counts, width - 1) - _ranges_within(width - 1) - 1
    valid[tail] = False
    out = acc[valid]
    out ^= out >> np.uint64(32)  # the high half into the low (datasketch then applies fmix32)
    return out.astype(np.uint32), per_doc


def _ranges_within(lengths: np.ndarray) -> np.ndarray:
    """0, 1, .., n - 1 for each length n, concatenated."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def shingles(text: str, n: int, char_n: int) -> list[tuple[str, ...]]:
    """The distinct shingles of one document, as token tuples (for checks and datasketch)."""
    folded = fold_text([text])
    unspaced = bool(is_unspaced(folded)[0])
    toks = tokenize(folded, unspaced)[0].to_list()
    k = min(char_n if unspaced else n, max(1, len(toks)))
    return sorted({tuple(toks[i : i + k]) for i in range(len(toks) - k + 1)})


def hash_shingle(shingle: tuple[str, ...]) -> int:
    """The 32-bit hash of one shingle; pass as datasketch's `hashfunc` to compare."""
    hashes = token_hashes(pl.Series(list(shingle), dtype=pl.String))
    value, _ = fold_shingles(hashes, np.array([len(shingle)]), len(shingle))
    return int(value[0])


@functools.cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters `a` (odd) and `b`, each (num_perm,)."""
    with serial_imports():  # datasketch, with scipy, takes 0.5 s: only where signatures are made
        from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def minhash(values: np.ndarray, per_doc: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signatures (n_docs, num_perm) uint32 from shingle hashes in document order.

    A document without shingles keeps the empty value (all 2^32 - 1), as in datasketch.
    """
    n_docs = len(per_doc)
    out = np.full((len(a), n_docs), _MAX, dtype=np.uint32)
    mixed = fmix32(values)
    bounds = np.concatenate([[0], np.cumsum(per_doc)])  # shingles of doc d: bounds[d:d+2]
    block = np.empty((len(a), _CHUNK), dtype=np.uint32)
    d0 = 0
    while d0 < n_docs:
        # whole documents per block, as many as fit in _CHUNK shingles (at least one)
        d1 = max(d0 + 1, int(np.searchsorted(bounds, bounds[d0] + _CHUNK, "right")) - 1)
        d1 = min(d1, n_docs)
        lo, hi = bounds[d0], bounds[d1]
        if hi - lo > _CHUNK:  # one long document: a running minimum over blocks of it
            for start in range(lo, hi, _CHUNK):
                part = _permuted(mixed[start : min(hi, start + _CHUNK)], a, b, block)
                np.minimum(out[:, d0], part.min(axis=1), out=out[:, d0])
        else:
            prod = _permuted(mixed[lo:hi], a, b, block)
            docs = d0 + np.flatnonzero(per_doc[d0:d1])
            if len(docs):
                out[:, docs] = np.minimum.reduceat(prod, bounds[docs] - lo, axis=1)
        d0 = d1
    return np.ascontiguousarray(out.T)


def _permuted(mixed: np.ndarray, a: np.ndarray, b: np.ndarray, block: np.ndarray) -> np.ndarray:
    """`a * h + b` for every permutation and shingle hash, (num_perm, S), in `block`.

    Each permutation's values lie contiguous, so a per-document minimum runs over contiguous
    memory.
    """
    prod = block[:, : len(mixed)]
    np.multiply(a[:, None], mixed[None, :], out=prod)
    prod += b[:, None]
    return prod


def signatures(texts: Sequence[str] | pa.Array, num_perm: int, seed: int, n: int, char_n: int):
    """MinHash signatures of `texts`, (n_docs, num_perm) uint32, as datasketch computes them.

    Args:
        texts: The documents.
        num_perm: Permutations (signature length).
        seed: datasketch's permutation seed.
        n: Words per shingle for scripts written with spaces.
        char_n: Characters per shingle for scripts written without them.
    """
    a, b = permutations(num_perm, seed)
    texts = pa.array(texts, pa.large_string())
    out = np.full((len(texts), num_perm), _MAX, dtype=np.uint32)
    for lo in range(0, len(texts), _BATCH):
        folded = fold_text(texts[lo : lo + _BATCH])
        unspaced = is_unspaced(folded)
        for flag, k in ((False, n), (True, char_n)):
            docs = np.flatnonzero(unspaced == flag)
            if len(docs):
                tokens, counts = tokenize(folded[docs], flag)
                values, per_doc = fold_shingles(token_hashes(tokens), counts, k)
                out[lo + docs] = minhash(values, per_doc, a, b)
    return out
