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

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash

UNSPACED_SHARE = 0.2  # cut into characters: documents with this share of unspaced script
_UNSPACED = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]"
_NOT_WORD = r"[^\p{L}\p{N}\p{M}\s]+"  # RE2 (Arrow) syntax: punctuation and symbols
_TOKEN_SEED = 0x5EED
_FOLD = np.uint64(0x9E3779B97F4A7C15)
_MAX = np.uint32(0xFFFFFFFF)
_CHUNK = 1024  # shingles per block of the (block, num_perm) product: stays in the L2 cache


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, datasketch's pre-mix (uint32 arithmetic wraps)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (uint64 arithmetic wraps)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def fold_text(texts: Sequence[str] | pa.Array) -> pl.Series:
    """Lower-case, and replace every run of punctuation and symbols by a space."""
    lowered = pc.utf8_lower(pa.array(texts, pa.large_string()))
    return pl.Series(pc.replace_substring_regex(lowered, _NOT_WORD, " "))


def is_unspaced(folded: pl.Series) -> np.ndarray:
    """Per document: is it mostly written in a script without spaces between words?"""
    head = folded.str.slice(0, 1000)  # the share is stable long before the end
    letters = (head.str.len_chars() - head.str.count_matches(r"\s")).clip(1)
    return (head.str.count_matches(_UNSPACED) >= UNSPACED_SHARE * letters).to_numpy()


def tokenize(folded: pl.Series, unspaced: np.ndarray) -> tuple[pl.Series, np.ndarray]:
    """Tokens of every document, flattened in document order, and the count per document.

    Args:
        folded: Documents as `fold_text` returns them.
        unspaced: Per document, whether to cut it into characters rather than words.

    Returns:
        The tokens and an int64 count per document.
    """
    frame = pl.DataFrame({"t": folded, "unspaced": unspaced}).with_row_index("doc")
    spaced = frame.filter(~pl.col("unspaced"))
    text = pc.utf8_trim_whitespace(spaced["t"].to_arrow().cast(pa.large_string()))
    split = pc.utf8_split_whitespace(text)  # at any run of Unicode spaces
    words = spaced.select("doc").with_columns(tok=pl.Series(split))
    chars = frame.filter("unspaced").select(
        "doc", tok=pl.col("t").str.replace_all(r"\s+", "").str.split("")
    )
    tokens = (
        pl.concat([words, chars])
        .sort("doc")
        .explode("tok")
        .filter(pl.col("tok").is_not_null() & (pl.col("tok") != ""))
    )
    counts = np.bincount(tokens["doc"].to_numpy(), minlength=frame.height).astype(np.int64)
    return tokens["tok"], counts


def token_hashes(tokens: pl.Series) -> np.ndarray:
    """A 64-bit hash per token (polars' hash, stable for a given polars version)."""
    return tokens.hash(_TOKEN_SEED).to_numpy()


def fold_shingles(
    hashes: np.ndarray, counts: np.ndarray, n: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold token hashes into one 32-bit hash per shingle.

    A shingle is `n` consecutive tokens of one document (all its tokens if it has fewer);
    its hash is `fmix64(fold(h_1 .. h_k)) >> 32`, where `fold` is `acc * C + h` from 0.

    Args:
        hashes: Token hashes (uint64), in document order.
        counts: Tokens per document.
        n: Tokens per shingle, one for all documents or one per document.

    Returns:
        The shingle hashes (uint32) and the document index of each, in document order.
    """
    total = len(hashes)
    width = np.minimum(counts, n)  # tokens per shingle, per document
    doc = np.repeat(np.arange(len(counts)), counts)
    w = width[doc]
    valid = np.arange(total) - (np.cumsum(counts) - counts)[doc] + w <= counts[doc]
    steps = int(width.max(initial=1))
    padded = np.concatenate([hashes, np.zeros(steps, np.uint64)])
    acc = padded[:total].copy()
    early = np.flatnonzero(valid & (w < steps))  # shingles complete before the last step
    early_w = w[early]
    early_out = np.where(early_w == 1, acc[early], np.uint64(0))
    for j in range(1, steps):
        acc *= _FOLD
        acc += padded[j : total + j]
        sel = early_w == j + 1
        early_out[sel] = acc[early[sel]]
    acc[early] = early_out
    out = acc
    return (fmix64(out[valid]) >> np.uint64(32)).astype(np.uint32), doc[valid]


def shingles(text: str, n: int, char_n: int) -> list[tuple[str, ...]]:
    """The distinct shingles of one document, as token tuples (for checks and datasketch)."""
    folded = fold_text([text])
    unspaced = is_unspaced(folded)
    toks = tokenize(folded, unspaced)[0].to_list()
    k = min(char_n if unspaced[0] else n, max(1, len(toks)))
    return sorted({tuple(toks[i : i + k]) for i in range(len(toks) - k + 1)})


def hash_shingle(shingle: tuple[str, ...]) -> int:
    """The 32-bit hash of one shingle; pass as datasketch's `hashfunc` to compare."""
    hashes = token_hashes(pl.Series(list(shingle), dtype=pl.String))
    value, _ = fold_shingles(hashes, np.array([len(shingle)]), len(shingle))
    return int(value[0])


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters `a` (odd) and `b`, each (num_perm,)."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def minhash(values: np.ndarray, doc: np.ndarray, n_docs: int, a: np.ndarray, b: np.ndarray):
    """Signatures (n_docs, num_perm) uint32 from shingle hashes sorted by document.

    A document without shingles keeps the empty value (all 2^32 - 1), as in datasketch.
    """
    out = np.full((n_docs, len(a)), _MAX, dtype=np.uint32)
    mixed = fmix32(values)
    bounds = np.searchsorted(doc, np.arange(n_docs + 1))  # shingles of doc d: bounds[d:d+2]
    block = np.empty((_CHUNK, len(a)), np.uint32)
    d0 = 0
    while d0 < n_docs:
        # whole documents per block, as many as fit in _CHUNK shingles (at least one)
        d1 = max(d0 + 1, int(np.searchsorted(bounds, bounds[d0] + _CHUNK, "right")) - 1)
        d1 = min(d1, n_docs)
        lo, hi = bounds[d0], bounds[d1]
        prod = block[: hi - lo] if hi - lo <= _CHUNK else np.empty((hi - lo, len(a)), np.uint32)
        np.multiply(mixed[lo:hi, None], a, out=prod)  # (S, num_perm)
        np.add(prod, b, out=prod)
        docs = np.arange(d0, d1)[bounds[d0:d1] < bounds[d0 + 1 : d1 + 1]]
        if len(docs):
            out[docs] = np.minimum.reduceat(prod, bounds[docs] - lo, axis=0)
        d0 = d1
    return out


def signatures(texts: Sequence[str] | pa.Array, num_perm: int, seed: int, n: int, char_n: int):
    """MinHash signatures of `texts`, (n_docs, num_perm) uint32, as datasketch computes them.

    Args:
        texts: The documents.
        num_perm: Permutations (signature length).
        seed: datasketch's permutation seed.
        n: Words per shingle for scripts written with spaces.
        char_n: Characters per shingle for scripts written without them.
    """
    folded = fold_text(texts)
    unspaced = is_unspaced(folded)
    tokens, counts = tokenize(folded, unspaced)
    values, doc = fold_shingles(token_hashes(tokens), counts, np.where(unspaced, char_n, n))
    a, b = permutations(num_perm, seed)
    return minhash(values, doc, len(counts), a, b)
