"""Near-duplicate removal side by side: refinery and other MinHash libraries, one core each.

    .venv/bin/python bench/dedup.py --docs 10000 [--docs 100000] [--peers rensa datatrove]

Each corpus (bench/dedup_corpus.py) is built once and cached under --out. Every contender then
runs in its own process pinned to one core with one thread: refinery under this virtualenv
(bench/dedup_refinery.py), the peers under .venv-bench (bench/dedup_peers.py; create it with
`make bench-venv`). Each writes one JSON row; this script prints them as a markdown table with
refinery's speed relative to each peer, and writes them to --out/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from dedup_corpus import describe, stats_path

BENCH = Path(__file__).parent
ROOT = BENCH.parent
REFINERY_SCRIPT = BENCH / "dedup_refinery.py"
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PEERS = ["datasketch-update", "datasketch-bulk", "rensa", "datatrove"]
SLOW_PEER, SLOW_PEER_MAX_DOCS = "datasketch-update", 20_000
ONE_THREAD = {
    name: "1"
    for name in ("OMP_NUM_THREADS", "POLARS_MAX_THREADS", "RAYON_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
}  # fmt: skip


def build_corpus(out: Path, n_docs: int, seed: int) -> tuple[Path, dict]:
    """Build the corpus on first use; return its cached parquet file and its stats.

    It is built in a child process because ru_maxrss survives fork and exec: had this process
    held a corpus, every contender would report at least that peak.
    """
    path = out / f"corpus-{n_docs}-seed{seed}.parquet"
    if not (path.exists() and stats_path(path).exists()):
        command = [sys.executable, str(BENCH / "dedup_corpus.py"), "--docs", str(n_docs),
                   "--seed", str(seed), "--out", str(path)]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
    return path, json.loads(stats_path(path).read_text())


def contender_command(name: str, corpus: Path, json_out: Path) -> list[str]:
    """The command line of one contender, pinned to core 0 where taskset exists."""
    if name == "refinery":
        command = [sys.executable, str(REFINERY_SCRIPT)]
    else:
        command = [str(PEER_PYTHON), str(BENCH / "dedup_peers.py"), "--peer", name]
    command += ["--corpus", str(corpus), "--json", str(json_out)]
    return ["taskset", "-c", "0", *command] if shutil.which("taskset") else command


def skip_reason(name: str, n_docs: int, slow: bool) -> str | None:
    """Why a contender does not run on this corpus, or None when it runs."""
    if name == "refinery" and not REFINERY_SCRIPT.exists():
        return f"skipped: {REFINERY_SCRIPT.relative_to(ROOT)} not found"
    if name == SLOW_PEER and n_docs > SLOW_PEER_MAX_DOCS and not slow:
        return f"skipped above {SLOW_PEER_MAX_DOCS:,} docs (too slow; --slow runs it)"
    return None


def run_contender(name: str, corpus: Path, out: Path, n_docs: int) -> dict:
    """Run one contender in its own process and read back its JSON row.

    Args:
        name: "refinery" or a peer name.
        corpus: The corpus parquet file.
        out: Folder for the row's JSON file.
        n_docs: Corpus size, for the file name.

    Returns:
        The contender's row, or a row with `error` (the last line it printed) if it failed.
    """
    json_out = out / f"{name}-{n_docs}.json"
    json_out.unlink(missing_ok=True)
    env = {**os.environ, **ONE_THREAD}
    done = subprocess.run(contender_command(name, corpus, json_out), env=env, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0 or not json_out.exists():
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return {"name": name, "docs": n_docs, "error": f"exit {done.returncode}: {lines[-1]}"}
    return json.loads(json_out.read_text())


def speed_ratio(row: dict, rows: list[dict]) -> str:
    """refinery's docs/s over this peer's, as "refinery / rensa = 1.8x"."""
    refinery = [r for r in rows if r["name"] == "refinery" and r["docs"] == row["docs"]]
    if row["name"] == "refinery" or "docs_per_s" not in row or not refinery:
        return ""
    if "docs_per_s" not in refinery[0]:
        return ""
    return f"refinery / {row['name']} = {refinery[0]['docs_per_s'] / row['docs_per_s']:.1f}x"


def table(rows: list[dict]) -> str:
    """The rows as a markdown table; skipped and failed contenders say why."""
    head = ["docs", "contender", "docs/s", "MB/s", "peak RSS MB", "precision", "recall", "F1",
            "speed"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if "docs_per_s" in row:
            cells = [
                f"{row['docs_per_s']:,.0f}",
                f"{row['mb_per_s']:.2f}",
                f"{row['peak_rss_mb']:,.0f}",
                *(f"{row[key]:.3f}" for key in ("precision", "recall", "f1")),
                speed_ratio(row, rows),
            ]
        else:
            cells = [row.get("skipped") or row.get("error", ""), *[""] * 6]
        lines.append("| " + " | ".join([f"{row['docs']:,}", row["name"], *cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, action="append", help="corpus size (repeatable)")
    parser.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    parser.add_argument("--out", type=Path, default=Path("data/bench/dedup"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow", action="store_true", help=f"run {SLOW_PEER} on any size")
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        sys.exit(f"bench/dedup.py: {PEER_PYTHON.relative_to(ROOT)} is missing: run make bench-venv")
    if not shutil.which("taskset"):
        print("taskset not found: contenders run unpinned")
    out = args.out.resolve()
    rows = []
    for n_docs in args.docs or [10_000]:
        corpus, stats = build_corpus(out, n_docs, args.seed)
        print(f"corpus {corpus.name}: {describe(stats)}")
        for name in ["refinery", *args.peers]:
            reason = skip_reason(name, n_docs, args.slow)
            row = {"name": name, "docs": n_docs, "skipped": reason} if reason else None
            rows.append(row or run_contender(name, corpus, out, n_docs))
            print(f"  {name}: {rows[-1].get('skipped') or rows[-1].get('error') or 'done'}")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
