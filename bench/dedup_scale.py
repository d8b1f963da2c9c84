"""Scale run of MinHash's reduce steps: signatures made directly, at growing corpus sizes,
with the bucket step split into K hash ranges.

For each size, a child process writes `<part>.keys.arrow` files (as the sign step does) of
random signatures in partitions of 100,000 documents, one in ten a copy of another with a
fifth of its values changed (estimated Jaccard about 0.8). Then, for each K, every bucket
task (one hash range) and the cluster step run each in a fresh child process, as tasks on a
cluster's workers would, which reports its time, peak RSS and peak anonymous memory (RSS
less the pages of memory-mapped files, which the kernel can drop). Time should grow about
linearly with size, the bucket tasks' memory should shrink about as 1/K, and the memory held
stay far below the signatures' size: they are memory-mapped, not read.

    .venv/bin/python bench/dedup_scale.py --docs 1000000 10000000 --ranges 1 8
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shards.writer import write_table
from tasks.dedup import exact_dedup
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
        doc_key = near.doc_keys(ids)
        table = pa.table(
            {
                "doc_id": ids.to_arrow(),
                "doc_key": pa.array(doc_key),
                "weight": pa.array(np.ones(n, np.uint32)),
                "empty": pa.array(np.zeros(n, bool)),
                "signature": pa.FixedSizeListArray.from_arrays(
                    pa.array(sigs.ravel()), CFG.num_perm
                ),
            }
        )
        names.append(f"p{start // PART:05d}")
        write_table(table, out.keys(names[-1]), compression=None)
        entries = near.band_entries(keys, np.ones(n, bool), doc_key)
        write_table(entries, out.bands(names[-1]), compression=None)
        digest = rng.integers(0, 2**64, (n, 2), dtype=np.uint64)
        digest[copies] = digest[src]  # the same copies, exact this time
        content = pa.table({"doc_id": ids.to_arrow(), "a": digest[:, 0], "b": digest[:, 1]})
        write_table(exact_dedup.by_digest(content), exact_dir(out).keys(names[-1]))
    return names


def exact_dir(out: StageDir) -> StageDir:
    """Where exact dedup's content keys of the same documents go."""
    return StageDir("exact_dedup", out.path.parent / "exact_dedup")


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


def measured(step: Callable[[], None]) -> dict:
    """Run `step` in this process: its seconds, peak RSS and peak anonymous memory."""
    with AnonPeak() as anon:
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
    return {
        "s": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_anon_mb": round(anon.peak_kb / 1024, 1),
    }


def inputs(root: Path) -> near.ClusterInputs:
    out = StageDir("minhash", root / "minhash")
    names = sorted(p.name.removesuffix(".keys.arrow") for p in out.path.glob("*.keys.arrow"))
    return near.ClusterInputs(out, out, names, LangIdConfig())


def step(root: Path, ranges: int, index: int | None, exact: bool = False) -> dict:
    """One bucket task (`index`), or the cluster step (None), in this process; with `exact`,
    exact dedup's group task or join step."""
    at = inputs(root)
    if exact:
        ex = exact_dir(at.out)
        if index is None:
            return measured(lambda: exact_dedup.join_ranges.fn(ex, ranges))
        return measured(lambda: exact_dedup.group_range.fn(ex, at.parts, index, ranges))
    if index is None:
        return measured(lambda: near.cluster_ranges.fn(at, ranges, CFG))
    return measured(lambda: near.bucket_range.fn(at, index, ranges, CFG))


def reduce(root: Path, ranges: int) -> dict:
    """Every bucket task and the cluster step for `ranges`, each in a child process."""
    run = [sys.executable, __file__, "--root", str(root), "--k", str(ranges)]
    tasks, exact = [], []
    for index in [*range(ranges), None]:
        for kind, found in (("", tasks), ("exact-", exact)):
            which = ["--step", f"{kind}{'cluster' if index is None else index}"]
            child = subprocess.run([*run, *which], check=True, capture_output=True, text=True)
            found.append(json.loads(child.stdout.strip().splitlines()[-1]))
    at = inputs(root)
    n_docs = sum(pl.read_ipc(at.out.keys(n), columns=["doc_id"]).height for n in at.parts)
    buckets, cluster = tasks[:-1], tasks[-1]
    found = pl.read_ipc(at.out.duplicates)
    exact_found = pl.read_ipc(exact_dir(at.out).duplicates)
    for path in [
        at.out.duplicates,
        *at.out.path.glob("components-*.arrow"),
        exact_dir(at.out).duplicates,
        *exact_dir(at.out).path.glob("duplicates-*"),
    ]:
        path.unlink()  # the next K starts afresh
    total = sum(t["s"] for t in tasks)
    return {
        "docs": n_docs,
        "ranges": ranges,
        "bucket_s": round(sum(t["s"] for t in buckets), 2),
        "bucket_task_s_max": max(t["s"] for t in buckets),
        "bucket_task_anon_mb_max": max(t["peak_anon_mb"] for t in buckets),
        "bucket_task_rss_mb_max": max(t["peak_rss_mb"] for t in buckets),
        "cluster_s": cluster["s"],
        "cluster_anon_mb": cluster["peak_anon_mb"],
        "us_per_doc": round(total / n_docs * 1e6, 2),
        "keys_files_mb": round(sum(at.out.keys(n).stat().st_size for n in at.parts) / 1e6, 1),
        "bands_files_mb": round(sum(at.out.bands(n).stat().st_size for n in at.parts) / 1e6, 1),
        "duplicates_found": int(found["duplicate_of"].is_not_null().sum()),
        "exact_s": round(sum(t["s"] for t in exact), 2),
        "exact_task_anon_mb_max": max(t["peak_anon_mb"] for t in exact[:-1]),
        "exact_join_anon_mb": exact[-1]["peak_anon_mb"],
        "exact_duplicates_found": int(exact_found["duplicate_of"].is_not_null().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--ranges", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--write", type=int, help=argparse.SUPPRESS)  # child: make signatures
    parser.add_argument("--step", help=argparse.SUPPRESS)  # child: one task
    parser.add_argument("--k", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("data/bench/dedup/scale.json"))
    args = parser.parse_args()
    if args.write:
        write_signatures(StageDir("minhash", args.root / "minhash"), args.write)
        return
    if args.step:
        which = args.step.removeprefix("exact-")
        index = None if which == "cluster" else int(which)
        print(json.dumps(step(args.root, args.k, index, args.step.startswith("exact-"))))
        return
    rows = []
    for n in args.docs:
        with tempfile.TemporaryDirectory(prefix="refinery-scale-") as tmp:
            subprocess.run([sys.executable, __file__, "--write", str(n), "--root", tmp],
                           check=True)  # fmt: skip
            for ranges in args.ranges:
                rows.append(reduce(Path(tmp), ranges))
                print(json.dumps(rows[-1]), flush=True)
    print("\n| documents | K | MinHash buckets s (all tasks) | largest bucket task: s, "
          "anonymous MB | cluster s | cluster anonymous MB | MinHash µs/doc | exact dedup s "
          "(all tasks) | largest exact task, anonymous MB |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for r in rows:
        print(f"| {r['docs']:,} | {r['ranges']} | {r['bucket_s']} | {r['bucket_task_s_max']}, "
              f"{r['bucket_task_anon_mb_max']} | {r['cluster_s']} | {r['cluster_anon_mb']} | "
              f"{r['us_per_doc']} | {r['exact_s']} | {r['exact_task_anon_mb_max']} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
