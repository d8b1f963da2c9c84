"""Near-duplicate removal with other MinHash libraries, timed from text to the kept set.

Runs under the bench virtualenv (.venv-bench, see bench/requirements-bench.txt):

    .venv-bench/bin/python bench/dedup_peers.py --corpus data/bench/dedup/corpus-10000.parquet \\
        --peer rensa --json data/bench/dedup/rensa-10000.json

Every peer runs as its users run it by default: documents split on whitespace, lower-cased,
word 5-grams (a document of fewer words is one shingle of all its words), 128 permutations,
an LSH index for Jaccard 0.8, each document queried against it and the candidates joined into
clusters. The first document of a cluster in corpus order is kept and the rest are removed.

- datasketch-update: `MinHash.update` per shingle; `MinHashLSH(threshold, num_perm)`.
- datasketch-bulk: `MinHash.bulk` over all documents; the same index.
- rensa: `RMinHash.from_token_sets` and `RMinHashLSH` with 16 bands of 8 rows.
- datatrove: its four MinHash stages (signatures, buckets, clusters, filter) on one local task,
  16 buckets of 8 hashes, its default text normalisation; tokens are split on whitespace after
  that normalisation, which removes the punctuation NLTK's tokenizer would otherwise split off.

The JSON holds name, docs, bytes, seconds, docs_per_s, mb_per_s, peak_rss_mb and the
precision, recall, f1 and removed count from bench/dedup_metrics.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from dedup_metrics import score


@dataclass(frozen=True)
class PeerConfig:
    """The settings every peer shares."""

    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5


def shingle(text: str, n: int) -> set[str]:
    """Lower-cased whitespace-word n-grams; a text of fewer than n words is one shingle."""
    words = text.lower().split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def keep_first(n_docs: int, neighbours: Callable[[int], list[int]]) -> list[bool]:
    """Join each document with its LSH candidates (union-find) and keep each cluster's first.

    Args:
        n_docs: Documents, numbered in corpus order.
        neighbours: The candidate documents that the index returns for a document.

    Returns:
        For each document, whether it is kept.
    """
    parent = list(range(n_docs))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n_docs):
        for j in neighbours(i):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the root is the cluster's first document
    return [find(i) == i for i in range(n_docs)]


def datasketch_kept(texts: list[str], cfg: PeerConfig, bulk: bool) -> list[bool]:
    """Which documents datasketch keeps, with per-shingle `update` or with `MinHash.bulk`."""
    from datasketch import MinHash, MinHashLSH

    # Generators, as a streaming user writes them: no document's shingles outlive its MinHash.
    shingles = ([s.encode("utf-8") for s in shingle(t, cfg.ngram)] for t in texts)
    if bulk:
        minhashes = MinHash.bulk(shingles, num_perm=cfg.num_perm)
    else:
        minhashes = []
        for doc in shingles:
            m = MinHash(num_perm=cfg.num_perm)
            for s in doc:
                m.update(s)
            minhashes.append(m)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    with lsh.insertion_session() as session:
        for key, m in enumerate(minhashes):
            session.insert(key, m, check_duplication=False)
    return keep_first(len(texts), lambda i: lsh.query(minhashes[i]))


def rensa_kept(texts: list[str], cfg: PeerConfig) -> list[bool]:
    """Which documents rensa keeps: R-MinHash sketches in one call, LSH with 16 bands."""
    from rensa import RMinHash, RMinHashLSH

    token_sets = (list(shingle(t, cfg.ngram)) for t in texts)
    minhashes = RMinHash.from_token_sets(token_sets, num_perm=cfg.num_perm, seed=42)
    lsh = RMinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, num_bands=16)
    lsh.insert_many(minhashes, 0)
    candidates = lsh.query_all(minhashes)
    return keep_first(len(texts), candidates.__getitem__)


def datatrove_kept(texts: list[str], cfg: PeerConfig) -> list[bool]:
    """Which documents datatrove's four-stage MinHash pipeline keeps, run as one local task."""
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceTokenizer(WordTokenizer):
        # NLTK's punkt data cannot be downloaded here, and after datatrove's normalisation
        # (no punctuation, single spaces) NLTK splits on whitespace anyway.
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    config = MinhashConfig(n_grams=cfg.ngram, num_buckets=cfg.num_perm // 8, hashes_per_bucket=8)
    kept: set[str] = set()

    def read(data, rank: int = 0, world_size: int = 1):
        # A generator step, not a list: the executor deep-copies the pipeline of every task.
        yield from (Document(text=t, id=str(i)) for i, t in enumerate(texts))

    def collect(data, rank: int = 0, world_size: int = 1):
        for doc in data:
            kept.add(doc.id)
            yield doc

    with tempfile.TemporaryDirectory() as tmp:
        stages = [
            [read, MinhashDedupSignature(output_folder=f"{tmp}/sigs", config=config,
                                         language=WhitespaceTokenizer("en"))],
            [MinhashDedupBuckets(input_folder=f"{tmp}/sigs", output_folder=f"{tmp}/buckets",
                                 config=config)],
            [MinhashDedupCluster(input_folder=f"{tmp}/buckets", output_folder=f"{tmp}/remove",
                                 config=config)],
            [read, MinhashDedupFilter(input_folder=f"{tmp}/remove"), collect],
        ]  # fmt: skip
        for i, pipeline in enumerate(stages):
            tasks = config.num_buckets if i == 1 else 1  # the bucket stage wants one per bucket
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=1,
                                  logging_dir=f"{tmp}/logs/{i}").run()  # fmt: skip
    return [str(i) in kept for i in range(len(texts))]


PEERS: dict[str, Callable[[list[str], PeerConfig], list[bool]]] = {
    "datasketch-update": lambda texts, cfg: datasketch_kept(texts, cfg, bulk=False),
    "datasketch-bulk": lambda texts, cfg: datasketch_kept(texts, cfg, bulk=True),
    "rensa": rensa_kept,
    "datatrove": datatrove_kept,
}


def run_peer(corpus: pl.DataFrame, peer: str, cfg: PeerConfig) -> dict:
    """Time one peer on a corpus and score what it removed.

    Args:
        corpus: doc_id, text and cluster, in corpus order.
        peer: A key of `PEERS`.
        cfg: Shared settings.

    Returns:
        The benchmark row for this peer.
    """
    corpus = corpus.sort("doc_id")
    texts = corpus["text"].to_list()
    start = time.perf_counter()
    kept = PEERS[peer](texts, cfg)
    seconds = time.perf_counter() - start
    removed = {doc_id for doc_id, keep in zip(corpus["doc_id"], kept, strict=True) if not keep}
    n_bytes = int(corpus["text"].str.len_bytes().sum())
    return {
        "name": peer,
        "docs": corpus.height,
        "bytes": n_bytes,
        "seconds": round(seconds, 3),
        "docs_per_s": round(corpus.height / seconds, 1),
        "mb_per_s": round(n_bytes / 1e6 / seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **score(corpus, removed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--peer", choices=sorted(PEERS), required=True)
    parser.add_argument("--json", type=Path, required=True, help="output file for the row")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--ngram", type=int, default=5)
    args = parser.parse_args()
    cfg = PeerConfig(args.threshold, args.num_perm, args.ngram)
    row = run_peer(pl.read_parquet(args.corpus), args.peer, cfg)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
