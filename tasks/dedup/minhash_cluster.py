"""LSH buckets, verified candidate pairs and clusters: the reduce steps of near-dup removal,
and the LSH query of augment's near-duplicate check.

Documents are referred to by `ref = (partition index << 32) | row`. Each band is reduced on
its own: (band key, ref) rows are sorted, and each bucket of two or more documents gives pairs
from its anchor (the member with the smallest `doc_key`, a hash of the doc_id) to every other
member. Pairs whose estimated Jaccard similarity is below the threshold can be dropped (LSH
false positives). Connected components over the pairs are the clusters. None of this depends
on the order of the inputs or on how they were partitioned.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.reader import read_table

_ROW_BITS = np.uint64(32)
_BAND_MIX = np.uint64(0x9E3779B97F4A7C15)


def make_refs(part_index: int, n_rows: int) -> np.ndarray:
    """The refs of rows 0..n_rows-1 of partition `part_index`."""
    return refs_of(part_index, np.arange(n_rows, dtype=np.uint64))


def refs_of(part_index: int, rows: np.ndarray) -> np.ndarray:
    """The refs of rows `rows` of partition `part_index`."""
    return (np.uint64(part_index) << _ROW_BITS) | rows.astype(np.uint64)


def split_refs(refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(partition index, row) of each ref."""
    return (refs >> _ROW_BITS).astype(np.int64), (refs & np.uint64(0xFFFFFFFF)).astype(np.int64)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit bucket key per document and band, (n_docs, bands) uint64."""
    keys = np.zeros((sigs.shape[0], bands), dtype=np.uint64)
    for r in range(rows):  # a polynomial over the band's values; uint64 arithmetic wraps
        keys = keys * _BAND_MIX + sigs[:, r : bands * rows : rows].astype(np.uint64)
    return keys


def bucket_pairs(keys: np.ndarray, doc_keys: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Anchor-to-member pairs of every bucket of one band with two or more documents.

    Args:
        keys: The band key of each document.
        doc_keys: Each document's anchor preference (smallest first; refs break ties).
        refs: Each document's ref.

    Returns:
        (n_pairs, 2) uint64 refs: (anchor, member).
    """
    order = np.lexsort((refs, doc_keys, keys))
    k, r = keys[order], refs[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    bucket = np.cumsum(first) - 1
    anchor = r[first][bucket]
    member = ~first
    return np.stack([anchor[member], r[member]], axis=1)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of an (n, 2) array, sorted (a faster `np.unique(pairs, axis=0)`)."""
    if len(pairs) < 2:
        return pairs
    ordered = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    new = np.ones(len(ordered), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    return ordered[new]


def query_pairs(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Every pair of a query document and another document in one of its buckets, as an LSH
    index's query finds them (`bucket_pairs` finds fewer: enough to connect each bucket).

    Args:
        keys: (n_docs, bands) band keys (`band_keys`).
        queries: The rows of `keys` to query.

    Returns:
        (n_pairs, 2) int64 rows (query, other) with other != query, unique and sorted.
    """
    found = [np.empty((0, 2), np.int64)]
    for band in keys.T:
        order = np.argsort(band, kind="stable")
        ranked = band[order]
        lo = np.searchsorted(ranked, band[queries], "left")
        counts = np.searchsorted(ranked, band[queries], "right") - lo
        query = np.repeat(queries, counts)
        # the bucket of each query, flattened: positions lo .. lo + count - 1
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        other = order[np.repeat(lo, counts) + offsets]
        found.append(np.stack([query, other], axis=1)[other != query])
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal signature values, row by row: the MinHash estimate of Jaccard."""
    return (a == b).mean(axis=1)


@dataclass
class SignatureStore:
    """Every partition's signatures, memory-mapped: gathering rows reads only their pages."""

    arrays: list[np.ndarray]

    @classmethod
    def open(cls, paths: list[Path], column: str = "signature") -> "SignatureStore":
        return cls([mapped_matrix(p, column) for p in paths])

    def gather(self, refs: np.ndarray) -> np.ndarray:
        """The signatures of `refs`, (len(refs), num_perm)."""
        num_perm = self.arrays[0].shape[1] if self.arrays else 0
        out = np.empty((len(refs), num_perm), dtype=np.uint32)
        part, row = split_refs(refs)
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.arrays[p][row[sel]]
        return out


def mapped_matrix(path: Path, column: str) -> np.ndarray:
    """A fixed-size-list column of an uncompressed Arrow IPC file as a 2-D array: zero-copy
    over a memory-mapped local file; from object storage only that column's bytes are read."""
    table = read_table(path, [column])
    chunks = table.column(column).chunks
    # One chunk as the sign step writes it: no copy (combine_chunks would copy even that).
    col = chunks[0] if len(chunks) == 1 else table.column(column).combine_chunks()
    width = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=True)
    return flat[col.offset * width : (col.offset + len(col)) * width].reshape(-1, width)


def pair_similarity(pairs: np.ndarray, store: SignatureStore) -> np.ndarray:
    """The estimated Jaccard similarity of each pair (float32)."""
    sim = np.zeros(len(pairs), dtype=np.float32)
    for lo in range(0, len(pairs), 1 << 16):  # bounded memory for the gathered signatures
        chunk = pairs[lo : lo + (1 << 16)]
        sim[lo : lo + len(chunk)] = estimated_jaccard(
            store.gather(chunk[:, 0]), store.gather(chunk[:, 1])
        )
    return sim


def connected_components(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the graph whose edges are `pairs` (refs).

    Returns:
        The refs that appear in any pair (sorted) and, for each, the smallest ref of its
        component (its label).
    """
    nodes, inverse = np.unique(pairs.ravel(), return_inverse=True)
    u, v = inverse.reshape(-1, 2).T
    label = np.arange(len(nodes))
    while True:  # min-label propagation with pointer jumping: O(log diameter) rounds
        low = np.minimum(label[u], label[v])
        new = label.copy()
        np.minimum.at(new, u, low)
        np.minimum.at(new, v, low)
        new = new[new]
        if np.array_equal(new, label):
            return nodes, nodes[label]
        label = new
