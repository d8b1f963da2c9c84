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
4. **Reduce memory.** bench/dedup_scale.py's results (data/bench/dedup/scale.json), when it has
   been run: the largest bucket task's anonymous memory per million documents at each K, the
   cluster step's per million documents in clusters.

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
    """Reduce memory and time per million documents from bench/dedup_scale.py's results."""
    if not SCALE.exists():
        return None
    rows = json.loads(SCALE.read_text())
    largest = max(r["docs"] for r in rows)
    found = {}
    for r in (r for r in rows if r["docs"] == largest):
        millions = r["docs"] / 1e6
        clustered = r["duplicates_found"] * 2 / 1e6  # a copy and its source, about
        found[r["ranges"]] = {
            "docs": r["docs"],
            "bucket_task_anon_mb_per_m_docs": round(r["bucket_task_anon_mb_max"] / millions, 1),
            "bucket_core_s_per_m_docs": round(r["bucket_s"] / millions, 2),
            "cluster_anon_mb_per_m_clustered": round(r["cluster_anon_mb"] / clustered, 1),
            "cluster_s_per_m_docs": round(r["cluster_s"] / millions, 2),
            "exact_task_anon_mb_per_m_docs": round(r["exact_task_anon_mb_max"] / millions, 1),
            "exact_core_s_per_m_docs": round(r["exact_s"] / millions, 2),
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
    """Core-hours, hours on N cores and bytes for 1 TB and 100 TB of gzipped WARC."""
    rows = []
    for tb in (1, 100):
        mb = tb * 1e6
        pages = mb * c["pages_per_warc_mb"]
        partitions = mb * MB / PARTITION
        core_h = (
            mb * c["stage_core_s_per_warc_mb"] + partitions * c["orchestration_s_per_partition"]
        ) / 3600
        for cores in (64, 1024):
            row = {
                "warc_tb": tb,
                "cores": cores,
                "pages_m": round(pages / 1e6),
                "partitions": round(partitions),
                "core_hours": round(core_h),
                "hours": round(core_h / cores, 1),
                "written_tb": round(tb * c["written_per_input_byte"], 1),
                "left_tb_without_keep_work": round(
                    tb * c["kept_per_input_byte_without_keep_work"], 1
                ),
            }
            reduce = c["reduce"] or {}
            ranges = max(reduce) if reduce else None
            if ranges:
                per = reduce[ranges]
                # K = cores: each bucket task holds 1/K of the keys of the documents left
                # after exact dedup (about all of them, at the corpus's share).
                row["bucket_task_gb"] = round(
                    per["bucket_task_anon_mb_per_m_docs"] * ranges / cores * pages / 1e6 / 1e3, 1
                )
                row["exact_task_gb"] = round(
                    per["exact_task_anon_mb_per_m_docs"] * ranges / cores * pages / 1e6 / 1e3, 1
                )
                row["cluster_step_gb_at_30pct_clustered"] = round(
                    per["cluster_anon_mb_per_m_clustered"] * 0.3 * pages / 1e6 / 1e3, 1
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
            ("many", [f"ingest.partition_bytes={SMALL_PARTITION}"]),
        ):
            runs[name] = one_run(warcs, Path(tmp) / name, sets)
            print(name, json.dumps({k: runs[name][k] for k in ("wall_s", "cpu_s", "partitions")}),
                  flush=True)  # fmt: skip
            shutil.rmtree(Path(tmp) / name)
    found = constants(runs["base"], runs["lean"], runs["many"], reduce_constants())
    rows = projection(found)
    print(json.dumps(found, indent=2))
    print(
        "\n| WARC | cores | pages | partitions | core-hours | hours | written | left, keep_work "
        "off | bucket task | cluster step |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(f"| {r['warc_tb']} TB | {r['cores']:,} | {r['pages_m']:,} M | {r['partitions']:,} | "
              f"{r['core_hours']:,} | {r['hours']} | {r['written_tb']} TB | "
              f"{r['left_tb_without_keep_work']} TB | {r.get('bucket_task_gb', '-')} GB | "
              f"{r.get('cluster_step_gb_at_30pct_clustered', '-')} GB |")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": runs, "constants": found, "projection": rows},
                                    indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
