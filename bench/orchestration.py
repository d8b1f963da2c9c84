"""What orchestration costs `refinery prepare` as the number of input partitions grows.

    .venv/bin/python bench/orchestration.py [--partitions 4 --partitions 500 ...] \\
        [--runner local|process] [--docs 10000] [--workers N] [--workdir /tmp/refinery-orch] \\
        [--timeout 420] [--json PATH]

The same corpus is prepared once per partition count (4 and 500 by default; --partitions is
repeatable, e.g. 2000), each time as a user would run it: `refinery prepare --runner local`
(the thread runner; `--runner process` for worker processes) with
`ingest.partition_bytes` = ceil(corpus bytes / count) and `tokenize.enabled=false`, from a
fresh output folder, with a fresh PREFECT_HOME, so the temporary Prefect server starts on an
empty SQLite database. The flow plans at least 4 partitions per
worker slot, so a small count gives more: the actual count is read from the manifest
(`inputs.partitions`). Orchestration that is flat in the partition count gives the same wall
time and memory at every count: the target is at most 1.2x those of the smallest count.

The corpus (built once into --workdir/corpus, --workdir/corpus.json being its stamp): --docs
documents of about 4.5 KB of real prose, in uncompressed JSONL files ({"id", "text"}) of
DOCS_PER_FILE documents each, so that grouping whole files makes partitions of any count up to
the number of files (the planner cuts no file into pieces smaller than
`tasks.ingest.inputs.MIN_PIECE_BYTES`, 1 MiB, so a few large files would cap the count).
Each original is paragraphs of one language drawn at random from
bench/data/dedup-pool.jsonl.gz and bench/data/wiki-paragraphs.jsonl.gz (English 50 %, Chinese
15 %, Japanese 10 %, ten other Wikipedia languages 2.5 % each); 5 % of the documents are exact
copies of an original, 10 % near copies (2 % of the words, or of the characters in Chinese,
Japanese and Thai, replaced, deleted or inserted). Shuffled with the seed; the same --docs and
--seed give the same bytes.

Per run: wall seconds (from start to exit), peak RSS of the flow process alone and of its whole
process tree (the temporary server included; sampled every 0.2 s), CPU seconds of the tree
(this script is a child subreaper, so processes orphaned during the run are reaped here and
counted) and of the flow process alone, other processes' share of the cores (`others %`: above
5 % the figures are skewed), task runs and flow runs counted in the Prefect database after the
run, its size (with its write-ahead log) and bytes per task run, kept documents (manifest
totals), the per-stage seconds of the manifest, the seconds before the flow's first log line
(start-up: imports and the temporary server) and outside the stages. After each run, what is
left of its process group (the temporary server can linger) is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
from e2e import become_subreaper, cpu_children, end_tree  # the same process-tree harness

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REFINERY = ROOT / ".venv" / "bin" / "refinery"
SOURCES = (BENCH / "data" / "dedup-pool.jsonl.gz", BENCH / "data" / "wiki-paragraphs.jsonl.gz")
VERSION = 1  # bump when the corpus changes for the same --docs and --seed
MIX = {"en": 0.5, "zh": 0.15, "ja": 0.1, **dict.fromkeys(
    ["es", "de", "el", "ru", "tr", "ar", "vi", "th", "hi", "ro"], 0.025)}  # fmt: skip
UNSPACED = {"zh", "ja", "th"}  # near copies edit characters, not words
DOC_BYTES = (3400, 4600)  # a document's paragraphs are drawn until it reaches this many bytes
MIN_PARAGRAPH = 120  # bytes: shorter lines (captions, headings) are left out
EXACT_SHARE, NEAR_SHARE, EDIT_RATE = 0.05, 0.10, 0.02
DOCS_PER_FILE = 5  # 2,000 files for 10,000 documents: up to about 2,000 partitions
PREFECT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
SAMPLE_S = 0.2
TARGET = 1.2  # at most this times the smallest count's wall time and peak memory
BUSY_WARN = 5.0  # % of the cores' time taken by other processes that skews a run
LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \|")
STAGE_LINE = re.compile(r" - (\w+): in=\d+ kept=\d+")


# --- the corpus -----------------------------------------------------------------------------


def load_paragraphs() -> dict[str, list[str]]:
    """The unique paragraphs of at least MIN_PARAGRAPH bytes of each language in SOURCES."""
    found: dict[str, dict[str, None]] = {}
    for path in SOURCES:
        for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
            row = json.loads(line)
            for para in (p.strip() for p in row["text"].splitlines()):
                if len(para.encode("utf-8")) >= MIN_PARAGRAPH:
                    found.setdefault(row["lang"], {})[para] = None
    return {lang: list(paras) for lang, paras in found.items() if lang in MIX}


def original(paras: list[str], rng: np.random.Generator) -> str:
    """Paragraphs of one language in random order until about a document's bytes."""
    target, size, chosen = rng.integers(*DOC_BYTES), 0, []
    for i in rng.permutation(len(paras)):
        chosen.append(paras[i])
        size += len(paras[i].encode("utf-8")) + 2
        if size >= target:
            break
    return "\n\n".join(chosen)


def near_copy(text: str, lang: str, rng: np.random.Generator) -> str:
    """`text` with EDIT_RATE of its words (characters where words are not spaced) replaced,
    deleted or inserted, at random places, with units of the text itself."""
    units = list(text) if lang in UNSPACED else text.split(" ")
    pool = [u for u in units if u.strip()]
    edits = max(1, round(EDIT_RATE * len(units)))
    for pos in sorted(rng.choice(len(units), size=min(edits, len(units)), replace=False))[::-1]:
        if units[pos] == "\n":
            continue
        op, unit = rng.integers(3), pool[rng.integers(len(pool))]
        if op == 0:
            units[pos] = unit
        elif op == 1:
            del units[pos]
        else:
            units.insert(pos, unit)
    return ("" if lang in UNSPACED else " ").join(units)


def build_documents(docs: int, seed: int) -> tuple[list[str], dict]:
    """`docs` texts (originals, exact and near copies, shuffled) and what they are made of."""
    rng = np.random.default_rng(seed)
    paras = load_paragraphs()
    langs = list(MIX)
    weights = np.array([MIX[lang] for lang in langs])
    n_exact, n_near = round(EXACT_SHARE * docs), round(NEAR_SHARE * docs)
    n_orig = docs - n_exact - n_near
    picked = rng.choice(len(langs), size=n_orig, p=weights / weights.sum())
    originals = [(langs[i], original(paras[langs[i]], rng)) for i in picked]
    texts = [text for _, text in originals]
    for _ in range(n_near):
        lang, text = originals[rng.integers(n_orig)]
        texts.append(near_copy(text, lang, rng))
    texts += [originals[rng.integers(n_orig)][1] for _ in range(n_exact)]
    order = rng.permutation(len(texts))
    counts = {lang: int((picked == i).sum()) for i, lang in enumerate(langs)}
    return [texts[i] for i in order], {"originals": n_orig, "exact": n_exact, "near": n_near,
                                       "languages": counts}  # fmt: skip


def write_corpus(texts: list[str], folder: Path) -> list[dict]:
    """The documents as JSONL files of DOCS_PER_FILE consecutive documents; each file's name,
    size and documents."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = []
    for k, first in enumerate(range(0, len(texts), DOCS_PER_FILE)):
        path = folder / f"docs-{k:05d}.jsonl"
        rows = texts[first : first + DOCS_PER_FILE]
        lines = (json.dumps({"id": f"orch-{first + i:05d}", "text": t}, ensure_ascii=False)
                 for i, t in enumerate(rows))  # fmt: skip
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        files.append({"name": path.name, "bytes": path.stat().st_size, "docs": len(rows)})
    return files


def ensure_corpus(workdir: Path, docs: int, seed: int) -> dict:
    """The corpus under `workdir`/corpus, built unless its stamp matches; the stamp."""
    folder, stamp_path = workdir / "corpus", workdir / "corpus.json"
    key = {"version": VERSION, "docs": docs, "seed": seed, "doc_bytes": list(DOC_BYTES),
           "mix": MIX, "copies": [EXACT_SHARE, NEAR_SHARE, EDIT_RATE],
           "docs_per_file": DOCS_PER_FILE}  # fmt: skip
    if stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        sizes = {f["name"]: f["bytes"] for f in stamp.get("files", [])}
        on_disk = {p.name: p.stat().st_size for p in folder.glob("*.jsonl")}
        if all(stamp.get(k) == v for k, v in key.items()) and sizes == on_disk:
            return stamp
    texts, made_of = build_documents(docs, seed)
    files = write_corpus(texts, folder)
    stamp = {**key, **made_of, "files": files, "bytes": sum(f["bytes"] for f in files),
             "path": str(folder)}  # fmt: skip
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


# --- measuring one run ----------------------------------------------------------------------


@dataclass
class Usage:
    """What one command cost, and how it ended."""

    wall_s: float
    cpu_s: float  # the whole process tree, exited processes included
    flow_cpu_s: float  # the flow process alone (its last sample)
    peak_flow_rss: int
    peak_tree_rss: int
    returncode: int
    timed_out: bool
    others_pct: float  # of the cores' time, spent by processes outside the run
    started: float  # epoch seconds
    rss_timeline: list[tuple[float, int, int]] = field(default_factory=list)  # s, flow, tree


class Sampler(threading.Thread):
    """Samples the flow process's RSS and CPU time and the whole tree's RSS every SAMPLE_S."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.peak_flow = self.peak_tree = 0
        self.flow_cpu = 0.0
        self.timeline: list[tuple[float, int, int]] = []

    def run(self) -> None:
        start, next_keep = time.perf_counter(), 0.0
        while not self.stop.is_set():
            flow, tree = self.sample()
            self.peak_flow, self.peak_tree = max(self.peak_flow, flow), max(self.peak_tree, tree)
            if (now := time.perf_counter() - start) >= next_keep:  # one point a second
                self.timeline.append((round(now, 1), flow, tree))
                next_keep += 1.0
            self.stop.wait(SAMPLE_S)

    def sample(self) -> tuple[int, int]:
        """RSS of the flow process and summed RSS of every descendant of this script."""
        flow = tree = 0
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                rss = proc.memory_info().rss
                tree += rss
                if proc.pid == self.pid:
                    flow = rss
                    times = proc.cpu_times()
                    self.flow_cpu = times.user + times.system
        return flow, tree


def busy_s() -> float:
    """Seconds every core has spent busy (neither idle nor waiting on I/O) since boot."""
    return sum(sum(c) - c.idle - c.iowait for c in psutil.cpu_times(percpu=True))


def measure(command: list[str], env: dict, log: Path, timeout: float) -> Usage:
    """Run `command` in its own process group, its output to `log`; what it cost."""
    cpu_before, busy_before = cpu_children(), busy_s()
    with log.open("wb") as out:
        started, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            returncode, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            returncode, timed_out = -9, True
        wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    end_tree(proc.pid)
    cpu = cpu_children() - cpu_before
    others = max(0.0, busy_s() - busy_before - cpu) / (wall * (os.cpu_count() or 1))
    return Usage(wall, cpu, sampler.flow_cpu, sampler.peak_flow, sampler.peak_tree, returncode,
                 timed_out, round(100 * others, 1), started, sampler.timeline)  # fmt: skip


# --- what a run left behind -----------------------------------------------------------------


def prefect_env(home: Path) -> dict[str, str]:
    """This environment without any PREFECT_* setting (so no server configured elsewhere is
    used), with PREFECT_HOME `home` and telemetry off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, **PREFECT_ENV, "PREFECT_HOME": str(home)}


def database_figures(home: Path) -> dict:
    """The Prefect database under `home`: its size as the run left it (write-ahead log
    included) and once the log is folded in (opening and closing it does that), its task runs
    by task, its flow runs and its largest tables."""
    found = sorted(home.rglob("*.db"))
    if not found:
        return {"db": None}
    db = found[0]
    at_exit = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    with contextlib.closing(sqlite3.connect(db)) as con:
        by_task = dict(con.execute("SELECT task_key, count(*) FROM task_run GROUP BY task_key"))
        flow_runs = con.execute("SELECT count(*) FROM flow_run").fetchone()[0]
        tables = con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name "
                             "ORDER BY 2 DESC LIMIT 8").fetchall()  # fmt: skip
    size = db.stat().st_size
    task_runs = sum(by_task.values())
    return {"db": str(db), "db_bytes_at_exit": at_exit, "db_bytes": size,
            "task_runs": task_runs, "flow_runs": flow_runs,
            "bytes_per_task_run": size / task_runs if task_runs else None,
            "task_runs_by_task": by_task, "largest_tables": dict(tables)}  # fmt: skip


def manifest_figures(out: Path) -> dict:
    """Partitions, documents, kept documents and stage seconds from the run's manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    stages = {name: s["seconds"] for name, s in manifest["stages"].items()}
    totals = manifest["totals"]
    return {"partitions": len(manifest["inputs"]["partitions"]), "documents": totals["documents"],
            "kept": totals["kept"], "stage_seconds": stages,
            "stages_s": sum(stages.values())}  # fmt: skip


def log_events(log: Path, started: float) -> dict[str, float]:
    """When the run's milestones were logged, in seconds from its start: the temporary
    server's start and stop, the flow and subflow runs' beginnings and ends, and each stage's
    line of counts (logged as the group of map steps it ran in ends). Read from Prefect's
    `HH:MM:SS.mmm |` (local time) console lines."""
    begin, events = datetime.fromtimestamp(started), {}
    finished = iter(["subflow finished", "flow finished"])
    for line in log.read_text(errors="replace").splitlines():
        if not (m := LOG_TIME.match(line)):
            continue
        name = event_name(line, finished)
        if name is not None and name not in events:
            h, mi, sec, ms = map(int, m.groups())
            at = begin.replace(hour=h, minute=mi, second=sec, microsecond=1000 * ms)
            events[name] = round((at - begin).total_seconds() % 86400, 1)
    return events


def event_name(line: str, finished: Iterator[str]) -> str | None:
    """The milestone a log line marks (see `log_events`), or None."""
    if "Starting temporary server" in line:
        return "server starting"
    if "Stopping temporary server" in line:
        return "server stopping"
    if "Beginning flow run" in line:
        return "flow begins"
    if "Beginning subflow run" in line:
        return "subflow begins"
    if "Finished in state" in line:
        return next(finished, None)
    if m := STAGE_LINE.search(line):
        return m.group(1)
    return None


# --- the runs -------------------------------------------------------------------------------


def run_one(count: int, stamp: dict, args: argparse.Namespace) -> dict:
    """`refinery prepare` of the corpus in about `count` partitions, from a fresh output folder
    and PREFECT_HOME; its row."""
    runs = args.workdir / "runs"
    out, home, log = runs / f"p{count}", runs / f"p{count}-prefect", runs / f"p{count}.log"
    for path in (out, home):
        shutil.rmtree(path, ignore_errors=True)
    home.mkdir(parents=True)
    partition_bytes = -(-stamp["bytes"] // count)
    command = [str(REFINERY), "prepare", "--input", stamp["path"], "--output", str(out),
               "--runner", args.runner, "--set", f"ingest.partition_bytes={partition_bytes}",
               "--set", "tokenize.enabled=false"]  # fmt: skip
    if args.workers:
        command += ["--workers", str(args.workers)]
    usage = measure(command, prefect_env(home), log, args.timeout)
    row = {"count": count, "partition_bytes": partition_bytes, "log": str(log), **asdict(usage)}
    row["events"] = log_events(log, usage.started)
    row["startup_s"] = row["events"].get("subflow begins")
    with contextlib.suppress(sqlite3.Error, OSError):
        row |= database_figures(home)
    if usage.returncode != 0:
        what = f"timed out after {args.timeout:.0f} s" if usage.timed_out else "failed"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {**row, "error": f"{what} (exit {usage.returncode}): {tail[0][:160]}"}
    row |= manifest_figures(out)
    row["outside_stages_s"] = row["wall_s"] - row["stages_s"]
    return row


def mib(n: int) -> str:
    """Bytes as whole MiB."""
    return f"{n / 2**20:,.0f}"


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    head = ["partitions", "wall s", "start-up s", "stages s", "CPU s (flow)", "peak RSS flow MiB",
            "peak RSS tree MiB", "others %", "task runs", "flow runs", "DB KiB (at exit)",
            "DB B/task run", "kept"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| ~{r['count']} | {r['wall_s']:.0f} | {r['error']} |" + " |" * 10)
            continue
        per_run = r.get("bytes_per_task_run")
        db = (f"{r['db_bytes'] / 1024:,.0f} ({r['db_bytes_at_exit'] / 1024:,.0f})"
              if "db_bytes" in r else "?")  # fmt: skip
        cells = [f"{r['partitions']} (asked {r['count']})", f"{r['wall_s']:.1f}",
                 f"{r['startup_s']:.1f}" if r["startup_s"] is not None else "?",
                 f"{r['stages_s']:.1f}", f"{r['cpu_s']:.0f} ({r['flow_cpu_s']:.0f})",
                 mib(r["peak_flow_rss"]), mib(r["peak_tree_rss"]), f"{r['others_pct']:.0f}",
                 str(r.get("task_runs", "?")), str(r.get("flow_runs", "?")), db,
                 f"{per_run:,.0f}" if per_run else "?", f"{r['kept']:,}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_run_table(rows: list[dict], first: str, values: dict[str, list[float | None]]) -> str:
    """A markdown table: one row per key of `values`, one column per finished run."""
    done = [r for r in rows if "error" not in r]
    head = f"| {first} | " + " | ".join(f"{r['partitions']} partitions" for r in done) + " |"
    lines = [head, "|---|" + "---:|" * len(done)]
    for key, cells in values.items():
        shown = " | ".join("" if c is None else f"{c:.1f}" for c in cells)
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)


def stage_table(rows: list[dict]) -> str:
    """Seconds per stage (the manifest's), and the rest of the wall time, per run."""
    done = [r for r in rows if "error" not in r]
    stages = dict.fromkeys(s for r in done for s in r["stage_seconds"])
    values = {s: [r["stage_seconds"].get(s) for r in done] for s in stages}
    values["outside stages"] = [r["outside_stages_s"] for r in done]
    return by_run_table(rows, "stage (s)", values)


def timeline_table(rows: list[dict]) -> str:
    """When each milestone was logged, in seconds from the start, per run (`log_events`)."""
    done = [r for r in rows if "error" not in r]
    events = dict.fromkeys(e for r in done for e in r["events"])
    values = {e: [r["events"].get(e) for r in done] for e in events}
    values["process exits"] = [r["wall_s"] for r in done]
    return by_run_table(rows, "logged at (s from start)", values)


RATIOS = {"wall": "wall_s", "peak RSS flow": "peak_flow_rss", "peak RSS tree": "peak_tree_rss"}
INFO_RATIOS = {"CPU": "cpu_s", "task runs": "task_runs", "DB bytes": "db_bytes"}


def ratios(rows: list[dict]) -> dict[int, dict[str, float]]:
    """Each finished run's figures (`RATIOS`, then `INFO_RATIOS`) over those of the run with
    the fewest partitions."""
    done = [r for r in rows if "error" not in r]
    if not done:
        return {}
    base = min(done, key=lambda r: r["count"])
    keys = {**RATIOS, **INFO_RATIOS}
    return {r["count"]: {name: r[key] / base[key] for name, key in keys.items()
                         if r.get(key) and base.get(key)}
            for r in done if r is not base}  # fmt: skip


def report_ratios(found: dict[int, dict[str, float]], rows: list[dict]) -> list[str]:
    """One line per run: its ratios, those of `RATIOS` against TARGET."""
    parts = {r["count"]: r.get("partitions", r["count"]) for r in rows}
    base = next(c for c in sorted(parts) if c not in found)
    lines = []
    for count, by in found.items():
        over = [name for name, x in by.items() if name in RATIOS and x > TARGET]
        shown = ", ".join(f"{name} {x:.2f}x" for name, x in by.items())
        verdict = f"OVER the {TARGET}x target: {', '.join(over)}" if over else (
            f"wall and peak RSS within the {TARGET}x target")  # fmt: skip
        lines.append(f"{parts[count]} vs {parts[base]} partitions: {shown} ({verdict})")
    return lines


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, action="append",
                        help="partitions to ask for; repeatable (default: 4 500)")  # fmt: skip
    parser.add_argument("--docs", type=int, default=10_000, help="documents in the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runner",
        choices=["local", "process"],
        default="local",
        help="prepare's runner: threads (local) or processes",
    )
    parser.add_argument("--workers", type=int, help="threads of the runner (default: cores)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/refinery-orch"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.partitions = sorted(set(args.partitions or [4, 500]))
    args.workdir = args.workdir.resolve()
    return args


def main() -> None:
    args = parse_args()
    if not REFINERY.exists():
        sys.exit(f"bench/orchestration.py: {REFINERY} is missing: run make setup")
    become_subreaper()
    stamp = ensure_corpus(args.workdir, args.docs, args.seed)
    print(
        f"corpus: {stamp['path']}: {args.docs:,} documents, {stamp['bytes'] / 1e6:.1f} MB in "
        f"{len(stamp['files'])} files ({stamp['exact']} exact, {stamp['near']} near copies)"
    )
    rows = []
    for count in args.partitions:
        print(f"  ~{count} partitions ...", flush=True)
        row = run_one(count, stamp, args)
        done = row.get("error") or f"{row['wall_s']:.1f} s"
        print(f"  ~{count} partitions: {done}", flush=True)
        rows.append(row)
    found = ratios(rows)
    print(table(rows))
    print()
    print(stage_table(rows))
    print()
    print(timeline_table(rows))
    print()
    for line in report_ratios(found, rows):
        print(line)
    for r in rows:
        if r.get("partitions", r["count"]) < r["count"] / 2:
            print(f"warning: asked for {r['count']} partitions, the flow planned "
                  f"{r['partitions']}: its files could not be grouped finer")  # fmt: skip
        if r.get("others_pct", 0) > BUSY_WARN:
            print(f"warning: other processes took {r['others_pct']:.0f} % of the cores during the "
                  f"~{r['count']} partition run: its figures are skewed")  # fmt: skip
    if args.json:
        result = {"corpus": stamp, "cores": os.cpu_count(), "machine": platform.platform(),
                  "target": TARGET, "rows": rows, "ratios": found}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
