"""The `refinery` command as a user runs it: errors, explain, and a kill -9 in the middle."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_shards(tmp_path):
    corpus = Path("tests/data/sample")
    clean = tmp_path / "clean"
    assert (
        refinery("prepare", "--input", str(corpus), "--output", str(clean), *SMALL).returncode == 0
    )

    out = tmp_path / "killed"
    proc = start(out, corpus)
    kill_when(proc, lambda: len(list(out.glob("work/exact_dedup-*/*.stats.json"))) >= 2)
    assert not (out / "manifest.json").exists()
    resumed = refinery("prepare", "--input", str(corpus), "--output", str(out), *SMALL)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    shards = sorted(p.name for p in clean.glob("part-*.arrow"))
    assert shards == sorted(p.name for p in out.glob("part-*.arrow"))
    for name in shards:
        assert (clean / name).read_bytes() == (out / name).read_bytes(), name
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    hit = refinery("explain", "dup-exact-000", "--output", str(out))
    assert hit.returncode == 0 and "dup-exact-000:" in hit.stdout
    junk = refinery("explain", "junk-003", "--output", str(out))
    assert "quarantined at stage ingest: ingest_bad_text_type" in junk.stdout
    assert refinery("verify", "--output", str(out)).returncode == 0
