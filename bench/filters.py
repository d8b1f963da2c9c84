"""Language ID and quality filtering throughput: refinery against raw fastText and datatrove.

    .venv/bin/python bench/filters.py [--docs 4000] [--workers 2] [--repeat 3]

The documents are English web-like pages of about 4.5 KB, built reproducibly by
bench/dedup_corpus.py from the pool in bench/data (news article text and Wikipedia paragraphs,
in 3-5 paragraphs, often with a byline above and share or copyright lines below), English
only and without copies, and written once to --out as jsonl. Every contender reads that file:

- (a) raw fastText: lid.176's `model.predict` on each whole document (newlines replaced), 1 core;
- (b) refinery's language ID, `detect_language`, 1 core; the goal is (b) >= 0.8 (a);
- (c) refinery's language ID (English, score >= 0.65) then `score_quality` on the rows it keeps,
  W worker processes;
- (d) datatrove's `LanguageFilter` + `GopherQualityFilter` + `C4QualityFilter`, W worker
  processes, under .venv-bench (`make bench-venv`); the goal is (c) >= 10 (d).

Each contender runs in its own process (bench/filters_refinery.py, bench/filters_peers.py),
pinned with taskset to cores 0..W-1 (core 0 for one worker), one thread per process. Within it
(bench/filters_harness.py) every worker is pinned to one core and takes a contiguous share of
the documents in batches of --batch-size, like refinery's partitions; loading models and a
warm-up are not timed, the workers start together, and the time runs until the last ends. The
fastest of --repeat runs counts. Results go to --out/results.json and a markdown table. Take
figures on an idle machine: other load on those cores slows every contender unevenly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dedup_corpus import make_corpus

from tasks.filter.langid import default_model_path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
ONE_THREAD = {
    name: "1"
    for name in ("OMP_NUM_THREADS", "POLARS_MAX_THREADS", "RAYON_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
}  # fmt: skip
CONTENDERS = ["raw", "langid", "full", "datatrove"]  # (a) to (d)
ONE_CORE = {"raw", "langid"}
GOALS = {"langid": ("raw", 0.8), "full": ("datatrove", 10.0)}  # row: (against, at least)


def write_docs(out: Path, n_docs: int, seed: int) -> Path:
    """The English documents as jsonl (doc_id, text), built on first use."""
    path = out / f"docs-{n_docs}-seed{seed}.jsonl"
    if not path.exists():
        corpus = make_corpus(n_docs, seed=seed, mix={"en": 1.0}, dup_fraction=0.0)
        out.mkdir(parents=True, exist_ok=True)
        corpus.select("doc_id", "text").write_ndjson(path)
    return path


def command(key: str, docs: Path, json_out: Path, args: argparse.Namespace) -> list[str]:
    """One contender's command line, pinned with taskset where it exists."""
    workers = 1 if key in ONE_CORE else args.workers
    if key == "datatrove":
        peer = BENCH / "filters_peers.py"
        line = [str(PEER_PYTHON), str(peer), "--model", str(default_model_path())]
    else:
        line = [sys.executable, str(BENCH / "filters_refinery.py"), "--contender", key]
    line += ["--docs-file", str(docs), "--json", str(json_out), "--workers", str(workers),
             "--batch-size", str(args.batch_size), "--repeat", str(args.repeat)]  # fmt: skip
    cores = ",".join(str(c) for c in range(min(workers, os.cpu_count() or 1)))
    return ["taskset", "-c", cores, *line] if shutil.which("taskset") else line


def run(key: str, docs: Path, args: argparse.Namespace) -> dict:
    """Run one contender; its row, or a row with `error` (its output goes to KEY.log)."""
    json_out = args.out / f"{key}-{docs.stem}.json"
    json_out.unlink(missing_ok=True)
    env = {**os.environ, **ONE_THREAD, "HF_ASSETS_CACHE": str(args.out / "hf-assets"),
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    done = subprocess.run(command(key, docs, json_out, args), env=env, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0 or not json_out.exists():
        log = args.out / f"{key}.log"
        log.write_text(done.stdout + done.stderr)
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return {"key": key, "error": f"exit {done.returncode}: {lines[-1]} (see {log.name})"}
    return {"key": key, **json.loads(json_out.read_text())}


def ratio(row: dict, rows: dict[str, dict]) -> str:
    """This row's speed over the one its goal names, e.g. "16.2x datatrove (goal 10x: met)"."""
    if row["key"] not in GOALS:
        return ""
    other, goal = GOALS[row["key"]]
    if "docs_per_s" not in row or "docs_per_s" not in rows[other]:
        return ""
    x = row["docs_per_s"] / rows[other]["docs_per_s"]
    met = "met" if x >= goal else "NOT met"
    return f"{x:.2f}x {rows[other]['name']} (goal {goal:g}x: {met})"


def table(rows: dict[str, dict]) -> str:
    """The rows as a markdown table."""
    head = ["contender", "what", "workers", "docs/s", "MB/s", "kept", "speed"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---:|---|"]
    for row in rows.values():
        if "error" in row:
            lines.append(f"| {row['key']} | {row['error']} |" + " |" * 5)
            continue
        cells = [row["name"], row["what"], str(row["workers"]), f"{row['docs_per_s']:,.0f}",
                 f"{row['mb_per_s']:.2f}", f"{row['kept']:,} of {row['docs']:,}",
                 ratio(row, rows)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2, help="processes of (c) and (d)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/bench/filters"))
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        sys.exit(f"bench/filters.py: {PEER_PYTHON} is missing: run make bench-venv")
    if not shutil.which("taskset"):
        print("taskset not found: contenders run unpinned")
    if args.workers > (os.cpu_count() or 1):
        print(f"only {os.cpu_count()} cores for {args.workers} workers: they share cores")
    args.out = args.out.resolve()
    docs = write_docs(args.out, args.docs, args.seed)
    print(f"{docs.name}: {args.docs:,} English documents, {docs.stat().st_size / 1e6:.1f} MB")
    rows = {}
    for key in CONTENDERS:
        rows[key] = run(key, docs, args)
        print(f"  {key}: {rows[key].get('error') or 'done'}")
    (args.out / "results.json").write_text(json.dumps(list(rows.values()), indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
