"""End to end, WARC files to deduplicated documents: refinery against datatrove's FineWeb pipeline.

    .venv/bin/python bench/e2e.py [--pages 1200] [--workers 1 --workers 2] \\
        [--workdir data/bench/e2e] [--json PATH] [--set section.key=value ...]

Both read the same WARC files (bench/e2e_corpus.py: real pages, rewritten pages and near and
exact copies, built once into --workdir/warc) on the same cores:

- refinery: `refinery prepare --input WARC_DIR --output FRESH_DIR --runner process --workers N`
  (as `python -m flows.cli` in --refinery-root, this tree by default) with the default config
  (plus any --set), so every stage runs, tokenize and the report included, and an ephemeral
  Prefect server is started and stopped as a user's run would;
- datatrove: bench/e2e_peers.py under .venv-bench (`make bench-venv`), the pipeline of its
  examples/fineweb.py (extraction, language ID open to every language, Gopher, C4 and FineWeb
  filters, then the four MinHash steps) with `LocalPipelineExecutor(tasks=N, workers=N)`.

Each run is one command in its own process group, pinned with taskset to the first N cores, timed
from start to exit, from a fresh output folder. Its CPU seconds are those of its whole process
tree: this script makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so a process
orphaned during the run (datatrove's forkserver, Prefect's server) is re-parented here instead
of to init; after the command exits, what is left of the tree is killed and every process is
reaped, and the growth of getrusage(RUSAGE_CHILDREN) is the CPU time of every process of the
run, exited ones included (psutil's view of live processes misses those). CPU % is that over
wall x N. Peak memory is the largest sum of RSS over the tree, sampled every 0.2 s (pages shared
after fork count once per process). docs/s counts input pages (HTML response records), MB/s
gzipped WARC bytes. Kept: refinery's manifest totals, datatrove's rows after its MinHash
filter. Duplicates removed: refinery's MinHash stage (its exact stage's removals beside it),
datatrove's MinHash filter; refinery deduplicates before its quality filters, datatrove after
its own, so the two see different documents. The order of the two alternates from one worker
count to the next. Other load on the cores skews every figure: the cores' busy time that the
run did not spend is recorded (`others_pct`), with a warning above 5 %.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e_corpus import describe, ensure_corpus

from tasks.filter.langid import default_model_path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PYTHON = ROOT / ".venv" / "bin" / "python"
PREFECT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
PR_SET_CHILD_SUBREAPER = 36
SAMPLE_S = 0.2
BUSY_WARN = 5.0  # % of the cores' time taken by other processes that skews a run
CONTENDERS = ("refinery", "datatrove")
TIMEOUT = "ingest_extract_timeout"  # refinery's reason for a page whose extraction ran out of time
ERROR_LINE = re.compile(r"^\w*(Error|Exception)\b")


@dataclass
class Usage:
    """What one command cost: wall and CPU seconds, peak summed RSS, and how it ended."""

    wall_s: float
    cpu_s: float
    peak_rss: int
    returncode: int
    timed_out: bool
    others_pct: float  # of the cores' time, spent by processes outside the run


def become_subreaper() -> None:
    """Make orphans of this process's descendants this process's children (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def tree_rss() -> int:
    """Summed RSS of every live descendant of this process."""
    total = 0
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def sample_peak(stop: threading.Event, peak: list[int]) -> None:
    """Keep the largest `tree_rss` in `peak[0]` until `stop` is set."""
    while not stop.is_set():
        peak[0] = max(peak[0], tree_rss())
        stop.wait(SAMPLE_S)


def end_tree(pgid: int) -> None:
    """Kill what is left of a finished run (its group, then any other descendant), reap all."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children left: all reaped
        if pid == 0:
            time.sleep(0.05)


def cpu_children() -> float:
    """User and system seconds of every reaped descendant so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_s(cores: list[int]) -> float:
    """Seconds `cores` have spent busy (neither idle nor waiting on I/O) since boot."""
    per_core = psutil.cpu_times(percpu=True)
    return sum(sum(per_core[c]) - per_core[c].idle - per_core[c].iowait for c in cores)


def measure(command: list[str], cores: list[int], env: dict, cwd: Path, log: Path,
            timeout: float) -> Usage:  # fmt: skip
    """Run `command` in its own process group on `cores`, its output to `log`; what it cost."""
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample_peak, args=(stop, peak), daemon=True)
    if shutil.which("taskset"):
        command = ["taskset", "-c", ",".join(map(str, cores)), *command]
    cpu_before, busy_before = cpu_children(), busy_s(cores)
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        sampler.start()
        try:
            returncode, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            returncode, timed_out = -9, True
        wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    end_tree(proc.pid)
    cpu = cpu_children() - cpu_before
    others = max(0.0, busy_s(cores) - busy_before - cpu) / (wall * len(cores))
    return Usage(wall, cpu, peak[0], returncode, timed_out, round(100 * others, 1))


def first_cores(workers: int) -> list[int]:
    """Cores 0..workers-1 of those this process may use (all of them if there are fewer)."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[:workers]


def refinery_run(warcs: Path, out: Path, workers: int, sets: list[str]) -> tuple[list, dict]:
    """refinery's command line (`refinery prepare`, as `python -m flows.cli`) and environment."""
    command = [str(PYTHON), "-m", "flows.cli", "prepare", "--input", str(warcs),
               "--output", str(out), "--runner", "process", "--workers", str(workers)]  # fmt: skip
    command += [arg for s in sets for arg in ("--set", s)]
    return command, {**os.environ, **PREFECT_ENV}


def datatrove_run(warcs: Path, out: Path, workers: int, json_out: Path) -> tuple[list, dict]:
    """datatrove's command line (bench/e2e_peers.py) and environment."""
    command = [str(PEER_PYTHON), str(BENCH / "e2e_peers.py"), "--input", str(warcs),
               "--output", str(out), "--workers", str(workers),
               "--model", str(default_model_path()), "--json", str(json_out)]  # fmt: skip
    env = {**os.environ, "HF_ASSETS_CACHE": str(out / "hf-assets"), "HF_HUB_OFFLINE": "1"}
    return command, env


def refinery_counts(out: Path) -> dict:
    """Kept documents, duplicates removed and stage seconds from refinery's manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]
    return {
        "kept": manifest["totals"]["kept"],
        "near_dups": sum(stages.get("minhash", {}).get("dropped", {}).values()),
        "exact_dups": sum(stages.get("exact_dedup", {}).get("dropped", {}).values()),
        "extract_timeouts": stages["ingest"].get("quarantined_reasons", {}).get(TIMEOUT, 0),
        "seconds": {name: stage.get("seconds") for name, stage in stages.items()},
    }


def datatrove_counts(json_out: Path) -> dict:
    """Kept documents, near-duplicates removed and step seconds from e2e_peers.py's JSON."""
    row = json.loads(json_out.read_text())
    keys = ("kept", "near_dups", "extract_timeouts", "seconds", "stats")
    return {"exact_dups": None, **{key: row[key] for key in keys}}


def run_one(name: str, workers: int, warcs: Path, args: argparse.Namespace) -> dict:
    """One contender at one worker count, from a fresh output folder; its row."""
    out = args.workdir / "runs" / f"{name}-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    json_out = args.workdir / "runs" / f"{name}-w{workers}.json"
    if name == "refinery":
        command, env = refinery_run(warcs, out, workers, args.sets)
    else:
        command, env = datatrove_run(warcs, out, workers, json_out)
    log = args.workdir / "logs" / f"{name}-w{workers}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cwd = args.refinery_root if name == "refinery" else ROOT
    load = os.getloadavg()[0]  # other work on the machine skews every figure
    usage = measure(command, first_cores(workers), env, cwd, log, args.timeout)
    row = {"name": name, "workers": workers, **asdict(usage), "load_before": load, "log": str(log)}
    if usage.returncode != 0:
        return {**row, "error": f"exit {usage.returncode}: {last_error(log)} (see {log})"}
    counts = refinery_counts(out) if name == "refinery" else datatrove_counts(json_out)
    return {**row, **counts}


def last_error(log: Path) -> str:
    """The last line of `log` that names an error, else its last line."""
    lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
    named = [line for line in lines if ERROR_LINE.search(line)]
    return (named or lines)[-1].strip()[:160]


def add_rates(row: dict, stamp: dict) -> dict:
    """docs/s, MB/s and CPU % of a finished row."""
    if "error" in row:
        return row
    wall = row["wall_s"]
    return {**row, "docs_per_s": stamp["pages"] / wall, "mb_per_s": stamp["bytes"] / 1e6 / wall,
            "cpu_pct": 100 * row["cpu_s"] / (wall * row["workers"])}  # fmt: skip


def ratios(rows: list[dict]) -> dict[int, float]:
    """refinery's docs/s over datatrove's, per worker count where both finished."""
    speed = {(r["name"], r["workers"]): r.get("docs_per_s") for r in rows}
    return {
        w: speed[("refinery", w)] / speed[("datatrove", w)]
        for (name, w) in speed
        if name == "refinery" and speed.get(("refinery", w)) and speed.get(("datatrove", w))
    }


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    head = ["pipeline", "workers", "wall s", "docs/s", "MB/s", "CPU %", "peak RSS MiB", "kept",
            "near-dups removed"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['workers']} | {r['error']} |" + " |" * 6)
            continue
        dups = f"{r['near_dups']:,}"
        if r["exact_dups"] is not None:
            dups += f" (+{r['exact_dups']:,} exact)"
        cells = [r["name"], str(r["workers"]), f"{r['wall_s']:.1f}", f"{r['docs_per_s']:.2f}",
                 f"{r['mb_per_s']:.3f}", f"{r['cpu_pct']:.0f}", f"{r['peak_rss'] / 2**20:,.0f}",
                 f"{r['kept']:,}", dups]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=1200, help="HTML pages in the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, action="append", help="repeatable; default 1 2")
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/e2e"))
    parser.add_argument("--json", type=Path, help="results (default: WORKDIR/results.json)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="passed to refinery")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1200, help="seconds a run may take")
    parser.add_argument("--refinery-root", type=Path, default=ROOT,
                        help="the refinery tree to run (a commit from git archive)")  # fmt: skip
    args = parser.parse_args()
    args.workers = args.workers or [1, 2]
    args.workdir = args.workdir.resolve()
    args.refinery_root = args.refinery_root.resolve()
    args.json = args.json or args.workdir / "results.json"
    return args


def notes(rows: list[dict], speedup: dict[int, float]) -> list[str]:
    """The lines printed under the table: speed ratios, extraction timeouts, busy cores."""
    lines = [f"refinery / datatrove, docs/s, {w} worker(s): {x:.2f}x" for w, x in speedup.items()]
    for r in rows:
        who = f"{r['name']} with {r['workers']} worker(s)"
        if r.get("extract_timeouts"):
            lines.append(f"{who}: {r['extract_timeouts']} pages ran out of extraction time")
        if r.get("others_pct", 0) > BUSY_WARN:
            lines.append(f"warning: other processes took {r['others_pct']:.0f} % of the cores "
                         f"during {who}: its figures are skewed")  # fmt: skip
    return lines


def run_all(warcs: Path, stamp: dict, args: argparse.Namespace) -> list[dict]:
    """Every contender at every worker count, the order alternating; their rows."""
    rows = []
    for i, workers in enumerate(args.workers):
        for name in CONTENDERS if i % 2 == 0 else CONTENDERS[::-1]:
            row = add_rates(run_one(name, workers, warcs, args), stamp)
            done = row.get("error") or f"{row['wall_s']:.1f} s"
            print(f"  {name}, {workers} worker(s): {done}")
            rows.append(row)
    return rows


def main() -> None:
    args = parse_args()
    if not PEER_PYTHON.exists():
        sys.exit(f"bench/e2e.py: {PEER_PYTHON} is missing: run make bench-venv")
    if max(args.workers) > (os.cpu_count() or 1):
        print(f"only {os.cpu_count()} cores for {max(args.workers)} workers: they share cores")
    become_subreaper()
    warcs = args.workdir / "warc"
    stamp = ensure_corpus(warcs, args.pages, args.seed)
    print(f"{warcs}: {describe(stamp)}")
    rows = run_all(warcs, stamp, args)
    speedup = ratios(rows)
    result = {"corpus": stamp, "cores": os.cpu_count(), "machine": platform.platform(),
              "sets": args.sets, "rows": rows, "docs_per_s_ratio": speedup}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(table(rows))
    print("\n".join(notes(rows, speedup)))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
