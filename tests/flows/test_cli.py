"""The `refinery` command as a user runs it: errors, explain, and a kill -9 in the middle."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

REFINERY = [sys.executable, "-m", "flows.cli"]
SMALL = ["--set", "ingest.partition_bytes=20000", "--set", "shards.size_limit=200000"]


def refinery(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*REFINERY, *args], capture_output=True, text=True, timeout=timeout)


def test_config_typo_fails_at_once_naming_the_key(tmp_path):
    start = time.monotonic()
    result = refinery(
        "prepare",
        "--input",
        "tests/data/sample",
        "--output",
        str(tmp_path),
        "--set",
        "minhash.thrshold=0.8",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "refinery: error: unknown config key: minhash.thrshold"
    assert time.monotonic() - start < 30
    assert not any(tmp_path.iterdir())


def test_missing_input_names_the_path(tmp_path):
    result = refinery(
        "prepare", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"refinery: error: input not found: {tmp_path / 'nowhere'}"


def start(out: Path, corpus: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*REFINERY, "prepare", "--input", str(corpus), "--output", str(out), *SMALL],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL the run's whole process group (its temporary server too) once `ready()`."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """An uninterrupted run on the sample with the default (thread) runner."""
    out = tmp_path_factory.mktemp("clean")
    result = refinery("prepare", "--input", "tests/data/sample", "--output", str(out), *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def ledger_rows(out: Path, stage: str) -> pl.DataFrame:
    """One stage's ledger rows, in a stable order."""
    parts = sorted((out / "ledger" / stage).glob("part-*.arrow"))
    return pl.concat([pl.read_ipc(p) for p in parts]).sort("doc_id")


def assert_same_shards(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("part-*.arrow"))
    assert names and names == sorted(p.name for p in b.glob("part-*.arrow"))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["process", "dask"])
def test_other_runners_give_the_same_shards(clean, tmp_path, runner):
    out = tmp_path / runner
    result = refinery("prepare", "--input", "tests/data/sample", "--output", str(out), *SMALL,
                      "--runner", runner, "--workers", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_shards(clean, out)
    near = ledger_rows(out, "minhash")
    assert near.height > 0 and near.equals(ledger_rows(clean, "minhash"))


@pytest.mark.slow
def test_more_reduce_ranges_give_the_same_shards(clean, tmp_path):
    out = tmp_path / "ranges"
    result = refinery("prepare", "--input", "tests/data/sample", "--output", str(out), *SMALL,
                      "--set", "runner.reduce_tasks=3")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(out.glob("work/exact_dedup-*/duplicates-*-of-003.arrow"))) == 3
    assert len(list(out.glob("work/minhash-*/components-*-of-003.arrow"))) == 3
    assert_same_shards(clean, out)
    for stage in ("exact_dedup", "minhash"):
        rows = ledger_rows(out, stage)
        assert rows.height > 0 and rows.equals(ledger_rows(clean, stage)), stage


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_shards(clean, tmp_path):
    corpus = Path("tests/data/sample")

    out = tmp_path / "killed"
    proc = start(out, corpus)
    kill_when(proc, lambda: len(list(out.glob("work/exact_dedup-*/*.stats.json"))) >= 2)
    assert not (out / "manifest.json").exists()
    resumed = refinery("prepare", "--input", str(corpus), "--output", str(out), *SMALL)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    assert_same_shards(clean, out)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    hit = refinery("explain", "dup-exact-000", "--output", str(out))
    assert hit.returncode == 0 and "dup-exact-000:" in hit.stdout
    junk = refinery("explain", "junk-003", "--output", str(out))
    assert "quarantined at stage ingest: ingest_bad_text_type" in junk.stdout
    assert refinery("verify", "--output", str(out)).returncode == 0


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies are dead)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # not a process, or it ended meanwhile
            continue
        if int(stat[2]) == pgid and stat[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death watch is Linux's")
def test_killed_command_takes_its_server_and_workers_with_it(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*REFINERY, "prepare", "--input", "tests/data/sample", "--output", str(out), *SMALL,
         "--runner", "process", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("work/ingest-*/*.stats.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before its workers wrote anything"
            time.sleep(0.05)
        assert len(group_members(proc.pid)) >= 4  # the command, its server, two workers
        proc.send_signal(signal.SIGKILL)  # the command alone, as `kill -9 PID` does
        proc.wait()
        deadline = time.monotonic() + 15
        while (left := group_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
