"""Scale run of MinHash's reduce steps: signatures made directly, at growing corpus sizes.

For each size, a child process writes `<part>.keys.arrow` files (as the sign step does) of
random signatures in partitions of 100,000 documents, one in ten a copy of another with a
fifth of its values changed (estimated Jaccard about 0.8), then times the bucket step (every
band group) and the cluster step, and reports its peak RSS and its peak anonymous memory
(RSS less the pages of memory-mapped files). Cost should grow about linearly with size, and
the memory held stay far below the signatures' size: they are memory-mapped, not read.

    .venv/bin/python bench/dedup_scale.py --docs 250000 500000 1000000
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shards.writer import write_table
from tasks.dedup import minhash_dedup as near
from tasks.dedup.minhash_cluster import band_keys
from tasks.filter.langid import LangIdConfig
from tasks.partition import StageDir

PART = 100_000
CFG = near.MinhashConfig(keep="doc_id", same_language=False)  # no text in this run


def write_signatures(out: StageDir, n_docs: int, seed: int = 0) -> list[str]:
    """Partitions of random signatures with planted near-duplicates; returns their names."""
    rng = np.random.default_rng(seed)
    bands, rows = CFG.lsh_params()
    names = []
    for start in range(0, n_docs, PART):
        n = min(PART, n_docs - start)
        sigs = rng.integers(0, 2**32 - 1, (n, CFG.num_perm), dtype=np.uint32)
        copies = rng.random(n) < 0.1
        src = rng.integers(0, n, copies.sum())
        changed = rng.random((copies.sum(), CFG.num_perm)) < 0.2
        sigs[copies] = np.where(changed, sigs[copies] ^ 1, sigs[src])
        keys = band_keys(sigs, bands, rows)
        ids = pl.Series([f"s{start + i:09d}" for i in range(n)])
        table = pa.table(
            {
                "doc_id": ids.to_arrow(),
                "doc_key": pa.array(near.doc_keys(ids)),
                "weight": pa.array(np.ones(n, np.uint32)),
                "empty": pa.array(np.zeros(n, bool)),
                "signature": pa.FixedSizeListArray.from_arrays(
                    pa.array(sigs.ravel()), CFG.num_perm
                ),
                **{f"band{b:03d}": pa.array(keys[:, b]) for b in range(bands)},
            }
        )
        names.append(f"p{start // PART:05d}")
        write_table(table, out.keys(names[-1]), compression=None)
    return names


class AnonPeak:
    """The peak of this process's anonymous memory (RssAnon: what it holds, leaving out the
    pages of memory-mapped files, which the kernel can drop), sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def reduce(root: Path) -> dict:
    """Time the bucket and cluster steps over the keys files under `root`."""
    with AnonPeak() as anon:
        row = _reduce(root)
    return {**row, "peak_anon_mb": round(anon.peak_kb / 1024, 1)}


def _reduce(root: Path) -> dict:
    out = StageDir("minhash", root / "minhash")
    names = sorted(p.name.removesuffix(".keys.arrow") for p in out.path.glob("*.keys.arrow"))
    start = time.perf_counter()
    for group, bands in enumerate(CFG.band_groups()):
        near.find_pairs.fn(group, bands, out, names, CFG)
    buckets = time.perf_counter() - start
    near.cluster_pairs.fn(near.ClusterInputs(out, out, names, LangIdConfig()), CFG)
    total = time.perf_counter() - start
    found = pl.read_ipc(out.duplicates)
    n_docs = sum(pl.read_ipc(out.keys(n), columns=["doc_id"]).height for n in names)
    return {
        "docs": n_docs,
        "bucket_s": round(buckets, 2),
        "cluster_s": round(total - buckets, 2),
        "total_s": round(total, 2),
        "us_per_doc": round(total / n_docs * 1e6, 2),
        "keys_files_mb": round(sum(out.keys(n).stat().st_size for n in names) / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "duplicates_found": int(found["duplicate_of"].is_not_null().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--write", type=int, help=argparse.SUPPRESS)  # child: make signatures
    parser.add_argument("--reduce", type=Path, help=argparse.SUPPRESS)  # child: time the steps
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("data/bench/dedup/scale.json"))
    args = parser.parse_args()
    if args.write:
        write_signatures(StageDir("minhash", args.root / "minhash"), args.write)
        return
    if args.reduce:
        print(json.dumps(reduce(args.reduce)))
        return
    rows = []
    for n in args.docs:
        with tempfile.TemporaryDirectory(prefix="refinery-scale-") as tmp:
            run = [sys.executable, __file__]
            subprocess.run([*run, "--write", str(n), "--root", tmp], check=True)
            child = subprocess.run([*run, "--reduce", tmp], check=True, capture_output=True,
                                   text=True)  # fmt: skip
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| documents | buckets s | clusters s | µs/doc | keys files MB | peak RSS MB "
          "| peak anonymous MB |\n|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for r in rows:
        print(f"| {r['docs']:,} | {r['bucket_s']} | {r['cluster_s']} | {r['us_per_doc']} | "
              f"{r['keys_files_mb']} | {r['peak_rss_mb']} | {r['peak_anon_mb']} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
