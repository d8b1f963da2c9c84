"""The constants of a large `prepare`, measured here, and what they come to for 1 TB and
100 TB of Common Crawl WARC on N cores.

    .venv/bin/python bench/at_scale.py [--workdir data/bench/e2e] [--json PATH]

1. **Work per core.** `refinery prepare --runner process --workers 1` (default config) on the
   WARC files of bench/e2e_corpus.py (built if missing), pinned to one core: each stage's
   documents per second from its manifest (one worker, so its seconds are one core's), and
   the CPU seconds per gzipped WARC MB of the whole run, start-up included.
2. **Bytes written per input byte.** The sizes of `work/` (per stage), the shards, ledger
   and token shards against the gzipped WARC bytes read, with `runner.keep_work` on (the
   default) and off.
3. **Orchestration per partition.** The same run with `ingest.partition_bytes` small enough
   for about 150 partitions: the extra seconds per extra partition.
4. **Reduce memory.** From bench/dedup_scale.py's results (data/bench/dedup/scale.json), when
   it has been run: per million documents, the growth of the largest exact-dedup task's
   memory and of the cluster step's (per million documents in clusters) between its two
   sizes; the largest bucket task's peak; the keys and band-entry files' bytes per document.

Then the projection: the same costs for 1 TB and 100 TB of WARC on 64 and 1,024 cores, at
pages per WARC byte as in the corpus (about Common Crawl's: 2.6 billion pages in about 90 TB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import become_subreaper, first_cores, measure, refinery_run
from e2e_corpus import describe, ensure_corpus

ROOT = Path(__file__).resolve().parents[1]
SMALL_PARTITION = 256 * 1024  # about 150 partitions of the corpus
PARTITION = 64 * 2**20  # ingest.partition_bytes' default
SCALE = Path("data/bench/dedup/scale.json")
MB = 1e6


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def one_run(warcs: Path, out: Path, sets: list[str]) -> dict:
    """One `prepare` on one core: wall and CPU seconds, its manifest, bytes written."""
    command, env = refinery_run(warcs, out, 1, sets)
    usage = measure(command, first_cores(1), env, ROOT, out.parent / f"{out.name}.log", 1800)
    if usage.returncode != 0:
        raise SystemExit(f"prepare failed ({usage.returncode}); see {out.parent}/{out.name}.log")
    manifest = json.loads((out / "manifest.json").read_text())
    work = {d.name.rsplit("-", 1)[0]: tree_bytes(d) for d in (out / "work").iterdir()}
    return {
        "wall_s": round(usage.wall_s, 2),
        "cpu_s": round(usage.cpu_s, 2),
        "partitions": len(manifest["inputs"]["partitions"]),
        "input_bytes": manifest["inputs"]["bytes"],
        "stages": {
            name: {"docs": s["in"], "seconds": s["seconds"]}
            for name, s in manifest["stages"].items()
        },
        "work_bytes": work,
        "shards_bytes": sum(f.stat().st_size for f in out.glob("part-*.arrow")),
        "ledger_bytes": tree_bytes(out / "ledger"),
        "tokens_bytes": tree_bytes(out / "tokens"),
        "totals": manifest["totals"],
    }


def reduce_constants() -> dict | None:
    """Reduce memory and time per million documents from bench/dedup_scale.py's results: the
    slope between its two largest sizes at each K (so the fixed ~130 MB of a Python process
    with its libraries is left out), and its keys bytes per document."""
    if not SCALE.exists():
        return None
    rows = json.loads(SCALE.read_text())
    sizes = sorted({r["docs"] for r in rows})[-2:]
    if len(sizes) < 2:
        return None
    found = {}
    for ranges in sorted({r["ranges"] for r in rows}):
        small, large = (next(r for r in rows if r["docs"] == n and r["ranges"] == ranges)
                        for n in sizes)  # fmt: skip
        docs_m = (large["docs"] - small["docs"]) / 1e6
        clustered_m = 2 * (large["duplicates_found"] - small["duplicates_found"]) / 1e6

        def slope(key: str, per: float, a: dict = small, b: dict = large) -> float:
            return round((b[key] - a[key]) / per, 1)

        found[ranges] = {
            "bucket_task_peak_anon_mb": large["bucket_task_anon_mb_max"],
            "bucket_core_s_per_m_docs": round(large["bucket_s"] / (large["docs"] / 1e6), 2),
            "cluster_anon_mb_per_m_clustered": slope("cluster_anon_mb", clustered_m),
            "exact_task_anon_mb_per_m_docs": slope("exact_task_anon_mb_max", docs_m / ranges),
            "keys_bytes_per_doc": round(large["keys_files_mb"] * 1e6 / large["docs"]),
            "bands_bytes_per_doc": round(large["bands_files_mb"] * 1e6 / large["docs"]),
        }
    return found


def constants(base: dict, lean: dict, many: dict, reduce: dict | None) -> dict:
    mb_in = base["input_bytes"] / MB
    docs = base["stages"]["ingest"]["docs"]
    written = sum(base["work_bytes"].values()) + base["shards_bytes"] + base["ledger_bytes"]
    written += base["tokens_bytes"]
    left = sum(lean["work_bytes"].values()) + lean["shards_bytes"] + lean["ledger_bytes"]
    left += lean["tokens_bytes"]
    extra = many["partitions"] - base["partitions"]
    return {
        "pages_per_warc_mb": round(docs / mb_in, 1),
        "docs_per_s_per_core": {
            name: round(s["docs"] / s["seconds"], 1)
            for name, s in base["stages"].items()
            if s["seconds"] > 0
        },
        "core_s_per_warc_mb": round(base["cpu_s"] / mb_in, 3),
        "stage_core_s_per_warc_mb": round(
            sum(s["seconds"] for s in base["stages"].values()) / mb_in, 3
        ),
        "written_per_input_byte": round(written / base["input_bytes"], 2),
        "work_per_input_byte": {
            name: round(n / base["input_bytes"], 3) for name, n in base["work_bytes"].items()
        },
        "kept_per_input_byte_without_keep_work": round(left / lean["input_bytes"], 2),
        "orchestration_s_per_partition": round((many["wall_s"] - base["wall_s"]) / extra, 4),
        "reduce": reduce,
    }


def projection(c: dict) -> list[dict]:
    """Core-hours, hours on N cores (perfect scaling assumed), bytes written and reduce costs
    for 1 TB and 100 TB of gzipped WARC, every page taken to reach the dedup steps."""
    rows = []
    reduce = c["reduce"] or {}
    k8 = reduce.get(max(reduce)) if reduce else None
    for tb in (1, 100):
        mb = tb * 1e6
        pages = mb * c["pages_per_warc_mb"]
        partitions = mb * MB / PARTITION
        cpu_s = mb * c["stage_core_s_per_warc_mb"] + partitions * c["orchestration_s_per_partition"]
        for cores in (64, 1024):
            row = {
                "warc_tb": tb,
                "cores": cores,
                "pages_m": round(pages / 1e6),
                "partitions": round(partitions),
                "core_hours": round(cpu_s / 3600),
                "hours": round(cpu_s / 3600 / cores, 1),
                "written_tb": round(tb * c["written_per_input_byte"], 1),
                "left_tb": round(tb * c["kept_per_input_byte_without_keep_work"], 1),
            }
            if k8:
                # K = cores ranges: each exact task holds 1/K of the keys; the bucket tasks
                # read the band entries once between them, each opening every partition's
                # footer; the cluster step holds a label per clustered document (30 % of
                # pages, say).
                row["exact_task_gb"] = round(
                    k8["exact_task_anon_mb_per_m_docs"] * pages / 1e6 / cores / 1e3, 1
                )
                row["band_entries_tb"] = round(k8["bands_bytes_per_doc"] * pages / 1e12, 1)
                row["footer_reads_m"] = round(cores * partitions / 1e6, 1)
                row["cluster_step_gb"] = round(
                    k8["cluster_anon_mb_per_m_clustered"] * 0.3 * pages / 1e6 / 1e3
                )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/e2e"))
    parser.add_argument("--json", type=Path, default=Path("data/bench/at_scale.json"))
    args = parser.parse_args()
    become_subreaper()
    warcs = args.workdir / "warc"
    stamp = ensure_corpus(warcs, 1200, 0)
    print(describe(stamp), flush=True)
    with tempfile.TemporaryDirectory(prefix="refinery-at-scale-") as tmp:
        runs = {}
        for name, sets in (
            ("base", []),
            ("lean", ["runner.keep_work=false"]),
            (
                "many",
                [
                    f"ingest.partition_bytes={SMALL_PARTITION}",
                    f"ingest.min_piece_bytes={SMALL_PARTITION // 2}",
                ],
            ),
        ):
            runs[name] = one_run(warcs, Path(tmp) / name, sets)
            print(name, json.dumps({k: runs[name][k] for k in ("wall_s", "cpu_s", "partitions")}),
                  flush=True)  # fmt: skip
            shutil.rmtree(Path(tmp) / name)
    found = constants(runs["base"], runs["lean"], runs["many"], reduce_constants())
    rows = projection(found)
    print(json.dumps(found, indent=2))
    print("\n| WARC | cores | pages | partitions | core-hours | hours | written | left, keep_work "
          "off | exact task | band entries read | footer reads | cluster step |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for r in rows:
        print(f"| {r['warc_tb']} TB | {r['cores']:,} | {r['pages_m']:,} M | {r['partitions']:,} | "
              f"{r['core_hours']:,} | {r['hours']} | {r['written_tb']} TB | {r['left_tb']} TB | "
              f"{r.get('exact_task_gb', '-')} GB | {r.get('band_entries_tb', '-')} TB | "
              f"{r.get('footer_reads_m', '-')} M | "
              f"{r.get('cluster_step_gb', '-')} GB |")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": runs, "constants": found, "projection": rows},
                                    indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
