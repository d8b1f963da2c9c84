"""refinery's side of bench/dedup.py: exact + MinHash dedup of a corpus, from text to kept set.

Runs the stage functions the `prepare` flow runs (without Prefect), with their real disk I/O:
exact dedup (hash, group, filter) then MinHash (sign, buckets, cluster, filter), over
partitions of about `--partition-mb` of text. The partitions are written first, as the
normalize stage would leave them, and the dedup then runs in a fresh process, so its time
and peak RSS are the dedup's own (the corpus is not held in memory, as it is in a pipeline).
Prints and writes one JSON row, as bench/dedup_peers.py does for the peers.

    .venv/bin/python bench/dedup_refinery.py --corpus data/bench/dedup/corpus-10000.parquet \
        --json data/bench/dedup/refinery-10000.json
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_metrics import score

from shards.writer import write_table
from tasks.dedup import exact_dedup as exact
from tasks.dedup import minhash_dedup as near
from tasks.filter.langid import LangIdConfig
from tasks.partition import StageDir


def write_input(corpus: pl.DataFrame, work: Path, partition_mb: float) -> list[str]:
    """Partitions of `corpus` as the normalize stage leaves them (not timed)."""
    n_parts = max(1, round(corpus["text"].str.len_bytes().sum() / (partition_mb * 1e6)))
    names = [f"p{i:05d}" for i in range(n_parts)]
    src = StageDir("normalize", work / "normalize")
    for i, name in enumerate(names):
        write_table(corpus.select("doc_id", "text")[i::n_parts].to_arrow(), src.kept(name))
    return names


def run(work: Path, names: list[str], cfg: near.MinhashConfig) -> set[str]:
    """Deduplicate the partitions under `work`; return the removed doc_ids."""
    src = StageDir("normalize", work / "normalize")
    ex = StageDir("exact_dedup", work / "exact")
    for name in names:
        exact.hash_partitions.fn([name], src, ex)
    exact.group_range.fn(ex, names, 0, 1)
    exact.join_ranges.fn(ex, 1)
    for name in names:
        exact.exact_dedup.fn([name], src, ex)
    mh = StageDir("minhash", work / "minhash")
    for name in names:
        near.sign_partitions.fn([name], ex, mh, cfg)
    at = near.ClusterInputs(ex, mh, names, LangIdConfig())
    near.bucket_range.fn(at, 0, 1, cfg)
    near.cluster_ranges.fn(at, 1, cfg)
    for name in names:
        near.minhash_dedup.fn([name], ex, mh)
    removed = [pl.read_ipc(d.ledger(n), columns=["doc_id"]) for d in (ex, mh) for n in names]
    return set(pl.concat(removed)["doc_id"])


def dedup_in_child(work: Path, names: list[str], overrides: list[str]) -> dict:
    """Run the dedup in a fresh process (without the corpus in memory); its time, peak RSS
    and removed doc_ids."""
    command = [sys.executable, __file__, "--work", str(work), *names]
    command += [arg for kv in overrides for arg in ("--set", kv)]
    child = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def child_main(work: Path, names: list[str], overrides: list[str]) -> None:
    cfg = near.MinhashConfig.model_validate(dict(s.split("=", 1) for s in overrides))
    start = time.perf_counter()
    removed = run(work, names, cfg)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "removed": sorted(removed)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--partition-mb", type=float, default=64.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a MinhashConfig override, e.g. threshold=0.6")  # fmt: skip
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        child_main(args.work, args.names, args.set)
        return
    if not (args.corpus and args.json):
        parser.error("--corpus and --json are required")
    corpus = pl.read_parquet(args.corpus)
    with tempfile.TemporaryDirectory(prefix="refinery-dedup-") as tmp:
        names = write_input(corpus, Path(tmp), args.partition_mb)
        result = dedup_in_child(Path(tmp), names, args.set)
    n_bytes = int(corpus["text"].str.len_bytes().sum())
    seconds = result["seconds"]
    row = {
        "name": "refinery",
        "docs": corpus.height,
        "bytes": n_bytes,
        "seconds": round(seconds, 3),
        "docs_per_s": round(corpus.height / seconds, 1),
        "mb_per_s": round(n_bytes / 1e6 / seconds, 2),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        **score(corpus.select("doc_id", "cluster"), set(result["removed"])),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
