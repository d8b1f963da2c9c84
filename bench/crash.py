"""Kill `refinery prepare` with SIGKILL at random moments, resume it, and compare with a clean run.

Each trial starts `refinery prepare` into a fresh directory and kills it: half the trials at a
failpoint (`shards/failpoints.py`: a shard half written, a shard or the manifest written but
not renamed, a partition without its marker, the ledger half linked), half at a random moment
of each stage in turn, then of a clean run's whole timeline. After the kill, every file
under a final name must be whole (each Arrow file opens and reads, each JSON file parses, a
manifest present matches its files). Then the run is resumed and must end with the files of the
uninterrupted run: the same shard and token bytes, the same ledger rows, a balanced manifest
equal to the clean one apart from timings, and no temporary file left. One Prefect server
serves every run. If the code changes while a trial runs, the trial is made again against a
new clean run.

    .venv/bin/python bench/crash.py [--trials 22] [--seed 0] [--json PATH] [--workdir DIR]

Exits 1 if any trial does not match the clean run.
"""

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.ipc as ipc

from flows import server
from shards.failpoints import ENV
from shards.manifest import check_balance
from shards.reader import verify_shards
from shards.writer import sha256_file

REPO = Path(__file__).resolve().parents[1]
INPUT = "tests/data/sample"
CONFIG = "infra/configs/sample.yaml"
# Shards of about 100 kB instead of 256 kB: several shards, so a kill can fall between them.
SETS = ("shards.size_limit=100000",)
SOURCES = ("flows", "tasks", "shards", "infra/configs")  # what a run's output depends on
RUN_TIMEOUT = 600.0
# A timed kill waits for the log line that starts its stage, then 90% of the offset drawn in
# the clean run's stage, so that it still lands in that stage when this run is a bit faster.
PACE = 0.9
STAGES_STARTED = "for flow 'prepare-stages'"
STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \|")
STAGE_DONE = re.compile(r" - (\w+): in=\d")
FINISHED = "Finished in state"


@dataclass
class Clean:
    """The uninterrupted run every trial is compared with."""

    out: Path
    manifest: dict[str, Any]
    files: list[str]
    segments: list[tuple[str, str, float]]  # stage, the log text that starts it, seconds
    sources: str  # source_hash() of the code it ran

    def count(self, prefix: str = "", suffix: str = "") -> int:
        return sum(f.startswith(prefix) and f.endswith(suffix) for f in self.files)


@dataclass
class Trial:
    index: int
    how: str  # "failpoint" or "timer"
    spec: str  # the REFINERY_FAILPOINT value, or "<stage>+<seconds into it>"
    stage: str = ""  # where the kill landed
    left: list[str] = field(default_factory=list)  # temporary files the kill left
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def matched(self) -> bool:
        return not self.problems


def source_hash() -> str:
    """A hash of the code and configs; it changes when someone edits them mid-run."""
    digest = hashlib.sha256()
    files = (p for d in SOURCES for p in sorted((REPO / d).rglob("*")) if p.is_file())
    for path in (p for p in files if "__pycache__" not in p.parts):
        digest.update(f"{path.relative_to(REPO)}\0".encode() + path.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """One Prefect server (SQLite in `home`) for every run; yields its API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = server.start(port, home)
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Runner:
    """Starts `refinery prepare` on the sample with `sets`, against one Prefect server."""

    sets: tuple[str, ...]
    env: dict[str, str]

    def start(self, out: Path, log: Path, failpoint: str | None = None) -> subprocess.Popen:
        """Start a run in its own process group, its output going to `log`."""
        env = self.env | ({ENV: failpoint} if failpoint else {})
        sets = [arg for s in self.sets for arg in ("--set", s)]
        command = [sys.executable, "-m", "flows.cli", "prepare", "--input", INPUT,
                   "--output", str(out), "--config", CONFIG, *sets]  # fmt: skip
        with open(log, "ab") as f:
            return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    cwd=REPO, start_new_session=True)  # fmt: skip

    def complete(self, out: Path, log: Path) -> bool:
        """Run to the end; return whether it succeeded."""
        return self.start(out, log).wait(timeout=RUN_TIMEOUT) == 0


def make_env(api_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    return env | {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1",
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def timeline(log: Path) -> list[tuple[str, str, float]]:
    """Each stage of a finished run with the log text that starts it and its seconds, from
    the log's timestamps; the last, `finish`, writes the ledger, manifest and report."""
    marks: list[tuple[str, str, float]] = []  # stage ending here, text of this line, time
    for line in log.read_text(errors="replace").splitlines():
        stamp, done = STAMP.match(line), STAGE_DONE.search(line)
        if not stamp or (not marks and STAGES_STARTED not in line):
            continue
        t = int(stamp[1]) * 3600 + int(stamp[2]) * 60 + float(stamp[3])
        t += 86400 if marks and t < marks[-1][2] else 0  # past midnight
        if not marks:
            marks.append(("", STAGES_STARTED, t))
        elif done:
            marks.append((done[1], f" - {done[1]}: in=", t))
        elif FINISHED in line:
            marks.append(("finish", FINISHED, t))
            break
    return [(m[0], prev[1], m[2] - prev[2]) for prev, m in itertools.pairwise(marks)]


def clean_run(runner: Runner, root: Path, recheck: bool) -> Clean:
    """The clean run; with `recheck`, a second one that must match it (else no trial could).
    Made again while the code changes under it."""
    while True:
        sources, n = source_hash(), len(list(root.glob("clean-*.log")))
        out, log = root / f"clean-{n}", root / f"clean-{n}.log"
        if not runner.complete(out, log):
            raise RuntimeError(f"the clean run failed:\n{tail(log)}")
        manifest = json.loads((out / "manifest.json").read_text())
        clean = Clean(out, manifest, file_list(out), timeline(log), sources)
        again = root / f"clean-{n}-again"
        if recheck and not runner.complete(again, again.with_suffix(".log")):
            raise RuntimeError(f"the second clean run failed:\n{tail(again.with_suffix('.log'))}")
        if source_hash() == sources:
            break
    if recheck and (problems := compare(again, clean)):
        raise RuntimeError("two clean runs differ:\n" + "\n".join(problems))
    seconds, matches = sum(s for _, _, s in clean.segments), ", a second one matches it"
    print(f"clean run: {seconds:.1f}s of stages, {len(manifest['shards'])} shards, "
          f"{len(clean.files)} files{matches if recheck else ''}")  # fmt: skip
    return clean


def file_list(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def plan(trials: int, seed: int, clean: Clean) -> list[Trial]:
    """Alternate failpoints (in a fixed order, the worst moments first) and timed kills.

    A failpoint's hit number is drawn at random. The first timed kills take the stages in a
    random order, one each (short stages too), at a random moment of the stage; the others
    fall at a random moment of the clean run's whole timeline.
    """
    rng = random.Random(seed)
    shards, markers = len(clean.manifest["shards"]), clean.count(suffix=".stats.json")
    failpoints = [
        lambda: f"arrow-body:{rng.randint(1, shards)}:part-*.arrow",  # a shard half written
        lambda: "atomic-rename:2:manifest.json",  # the run's manifest (1 is the tokens')
        lambda: f"partition-stats:{rng.randint(1, markers)}",
        lambda: f"shard-batch:{rng.randint(1, len(clean.manifest['inputs']['partitions']))}",
        lambda: f"atomic-rename:{rng.randint(1, shards)}:part-*.arrow",
        lambda: f"ledger-link:{rng.randint(1, clean.count(prefix='ledger/'))}",
        lambda: "manifest",
        lambda: f"atomic-rename:{rng.randint(1, len(clean.files))}",
        lambda: f"arrow-body:{rng.randint(1, 2 * markers)}",  # a work file half written
    ]
    stages = rng.sample(clean.segments, len(clean.segments))
    total = sum(s for _, _, s in clean.segments)
    out = []
    for i in range(trials):
        if i % 2 == 0:
            out.append(Trial(i + 1, "failpoint", failpoints[(i // 2) % len(failpoints)]()))
        elif i // 2 < len(stages):
            stage, _, seconds = stages[i // 2]
            out.append(Trial(i + 1, "timer", f"{stage}+{rng.random() * seconds * PACE:.2f}"))
        else:
            out.append(Trial(i + 1, "timer", moment(rng.random() * total, clean.segments)))
    return out


def moment(at: float, segments: list[tuple[str, str, float]]) -> str:
    """`at` seconds into the clean run as a timer spec: `<stage>+<seconds into it>`."""
    for stage, _, seconds in segments:
        if at < seconds or stage == "finish":
            break
        at -= seconds
    return f"{stage}+{at * PACE:.2f}"


def wait_for(proc: subprocess.Popen, log: Path, text: str) -> None:
    """Wait until `text` is in the run's log, or the run ends."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.02)


def kill(runner: Runner, trial: Trial, clean: Clean, out: Path, log: Path) -> bool:
    """Start the run and kill it; return whether it died of SIGKILL."""
    if trial.how == "failpoint":
        proc = runner.start(out, log, trial.spec)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=RUN_TIMEOUT)
    else:
        stage, offset = trial.spec.rsplit("+", 1)
        proc = runner.start(out, log)
        wait_for(proc, log, next(text for s, text, _ in clean.segments if s == stage))
        deadline = time.monotonic() + float(offset)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    killed = proc.poll() is None or proc.returncode == -signal.SIGKILL
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: anything the run started
    proc.wait()
    return killed


def stage_at(out: Path, log: Path, clean: Clean) -> str:
    """The stage a kill landed in: the first one whose outputs are not all there."""
    if STAGES_STARTED not in log.read_text(errors="replace"):
        return "startup"
    parts = clean.manifest["inputs"]["partitions"]
    for stage, entry in clean.manifest["stages"].items():
        work = entry.get("work", "-")
        done = all((out / "work" / work / f"{p}.stats.json").exists() for p in parts)
        if (clean.out / "work" / work).is_dir() and not done:
            return stage
    steps = {
        "shards": [s["path"] for s in clean.manifest["shards"]],
        "tokenize": ["tokens/manifest.json"],
        "ledger": [f for f in clean.files if f.startswith("ledger/")],
        "manifest": ["manifest.json"],
        "report": [f for f in clean.files if f.startswith("report/")],
    }
    missing = (s for s, names in steps.items() if not all((out / n).exists() for n in names))
    return next(missing, "exit")


def check_killed(out: Path) -> list[str]:
    """Every file under a final name is whole, and a manifest present matches its files."""
    problems = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and ".tmp-" not in p.name):
        try:
            if path.suffix == ".arrow":
                with open(path, "rb") as f:
                    ipc.open_file(f).read_all()
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".png" and not path.read_bytes().endswith(b"IEND\xaeB`\x82"):
                raise ValueError("no PNG end chunk")
        except Exception as e:  # any failure to read is what this check reports
            problems.append(f"after the kill, {path.relative_to(out)} is not whole: {e}")
    if (out / "manifest.json").exists():
        problems += [f"after the kill: {p}" for p in verify_shards(out)]
    if (out / "tokens" / "manifest.json").exists():
        splits = json.loads((out / "tokens" / "manifest.json").read_text())["splits"]
        for split, entry in splits.items():
            for shard in entry["shards"]:
                path = out / "tokens" / split / shard["path"]
                if not path.exists() or sha256_file(path) != shard["sha256"]:
                    problems.append(f"after the kill, {path.relative_to(out)} is not as listed")
    return problems


def differences(a: Any, b: Any, at: str = "") -> list[str]:
    """Where two JSON values differ, as `key.key: value (clean: value)`."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{at}.{k}")]
    return [] if a == b else [f"{at.lstrip('.')}: {str(a)[:80]} (clean: {str(b)[:80]})"]


def without_timings(manifest: dict[str, Any]) -> dict[str, Any]:
    stages = manifest["stages"]
    return manifest | {"stages": {n: s | {"seconds": None} for n, s in stages.items()}}


def ledger_diff(out: Path, clean: Path, stage: str) -> str | None:
    """How one stage's ledger rows differ from the clean run's, or None."""
    rows = [pl.concat([pl.read_ipc(p) for p in sorted((o / "ledger" / stage).glob("*.arrow"))])
            for o in (out, clean)]  # fmt: skip
    a, b = (r.sort(r.columns, nulls_last=True) for r in rows)
    if a.equals(b):
        return None
    keys = ["doc_id", "kind", "reason"]
    extra = a.join(b, on=keys, how="anti")["doc_id"].to_list()
    missing = b.join(a, on=keys, how="anti")["doc_id"].to_list()
    same = "; the same documents and reasons, other columns differ" if not extra + missing else ""
    return (f"ledger/{stage}: {a.height} rows (clean {b.height}); not in the clean run: "
            f"{extra[:3]}, missing: {missing[:3]}{same}")  # fmt: skip


def compare(out: Path, clean: Clean) -> list[str]:
    """How the resumed output differs from the clean one (empty when it does not)."""
    files = file_list(out)
    problems = [f"extra file {f}" for f in sorted(set(files) - set(clean.files))]
    problems += [f"missing file {f}" for f in sorted(set(clean.files) - set(files))]
    same = [
        f for f in clean.files if f.endswith(".arrow") and f.split("/")[0] not in ("work", "ledger")
    ]
    for name in (f for f in [*same, "tokens/tokenizer.json"] if f in files):
        if (out / name).read_bytes() != (clean.out / name).read_bytes():
            problems.append(f"{name}: bytes differ from the clean run")
    for stage in sorted({f.split("/")[1] for f in clean.files if f.startswith("ledger/")}):
        problems += filter(None, [ledger_diff(out, clean.out, stage)])
    if "manifest.json" in files:
        manifest = json.loads((out / "manifest.json").read_text())
        try:
            check_balance(manifest["stages"])
        except ValueError as e:
            problems.append(f"manifest.json does not balance: {e}")
        diff = differences(without_timings(manifest), without_timings(clean.manifest))
        problems += [f"manifest.json: {d}" for d in diff[:5]]
    if "tokens/manifest.json" in files:
        tokens = [json.loads((o / "tokens/manifest.json").read_text()) for o in (out, clean.out)]
        problems += [f"tokens/manifest.json: {d}" for d in differences(*tokens)[:5]]
    return problems


def run_trial(runner: Runner, trial: Trial, clean: Clean, root: Path) -> Trial:
    """Kill, check what the kill left, resume, compare with the clean run."""
    start = time.monotonic()
    out, log = root / f"trial-{trial.index:02d}", root / f"trial-{trial.index:02d}.log"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    if not kill(runner, trial, clean, out, log):
        trial.problems.append(f"the run ended before the kill:\n{tail(log)}")
    trial.stage = stage_at(out, log, clean)
    if out.exists():
        trial.left = sorted(str(p.relative_to(out)) for p in out.rglob("*.tmp-*"))
        trial.problems += check_killed(out)
    if not runner.complete(out, log):
        trial.problems.append(f"the resumed run failed:\n{tail(log)}")
    else:
        trial.problems += compare(out, clean)
        trial.problems += [f"temporary file left: {p}" for p in out.rglob("*.tmp-*")]
    trial.seconds = round(time.monotonic() - start, 1)
    return trial


HEADER = f"{'trial':>5}  {'how':<44}{'stage':<12}{'left':>4}  matched"


def print_row(t: Trial) -> None:
    """One trial: how it was killed, the stage it landed in, temporary files left, matched."""
    how = f"{t.how} {t.spec}" + ("s" if t.how == "timer" else "")
    print(f"{t.index:>5}  {how:<44}{t.stage:<12}{len(t.left):>4}  {'yes' if t.matched else 'NO'}")
    for problem in t.problems:
        print(f"       - {problem}")
    sys.stdout.flush()


def run_trials(
    trials: int,
    seed: int,
    sets: tuple[str, ...] = SETS,
    workdir: Path | None = None,
    recheck: bool = True,
) -> dict[str, Any]:
    """Start a Prefect server, make the clean run, then run every trial; return the results.

    Runs go to `workdir` (an empty or new directory, kept) or to a temporary directory.
    """
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-")))
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise ValueError(f"{root} is not empty: each trial needs a fresh output directory")
        api_url = stack.enter_context(prefect_server(root / "server"))
        runner = Runner(sets, make_env(api_url, root / "client"))
        clean = clean_run(runner, root, recheck)
        print(HEADER, flush=True)
        done = []
        for trial in plan(trials, seed, clean):
            for _ in range(3):  # the code may change under a trial: make it again
                if source_hash() != clean.sources:
                    print("the code changed: a new clean run", flush=True)
                    clean = clean_run(runner, root, recheck)
                result = run_trial(runner, dataclasses.replace(trial), clean, root)
                if source_hash() == clean.sources:
                    break
            else:
                result.problems.append("the code kept changing during the trial")
            done.append(result)
            print_row(result)
    return {
        "seed": seed,
        "trials": [asdict(t) | {"matched": t.matched} for t in done],
        "matched": sum(t.matched for t in done),
        "stages": dict(Counter(t.stage for t in done)),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=22)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    parser.add_argument("--set", dest="sets", action="append", metavar="SECTION.KEY=VALUE",
                        help=f"a config override (default: {' '.join(SETS)})")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="keep every run's output here")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    sets = tuple(args.sets) if args.sets else SETS
    result = run_trials(args.trials, args.seed, sets, args.workdir)
    stages = ", ".join(f"{s} {n}" for s, n in result["stages"].items())
    print(f"\n{result['matched']} of {len(result['trials'])} trials matched a clean run "
          f"(seed {args.seed}, {result['seconds']:.0f}s); stages hit: {stages}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["matched"] == len(result["trials"]) else 1


if __name__ == "__main__":
    sys.exit(main())
