"""Kill -9 at the worst moments: failpoints, and three trials of the crash harness.

`make test-crash` runs all of `bench/crash.py` (22 seeded trials over every stage); here run
the three that matter most: a shard half written, the run manifest written but not renamed,
and one kill at a random moment.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.crash import PACE, Clean, moment, plan, run_trials
from shards.failpoints import ENV

CALLS = [
    '"manifest"',
    '"manifest"',
    '"atomic-rename", Path("out/part-00000.arrow")',
    '"atomic-rename", Path("out/manifest.json")',
    '"atomic-rename", Path("out/tokens/manifest.json")',
]


def exit_status(armed: str | None) -> int:
    """Exit status of a process that makes the `CALLS` to `hit` (-9: it was killed)."""
    code = "\n".join(
        ["from pathlib import Path", "from shards import failpoints"]
        + [f"failpoints.hit({call})" for call in CALLS]
    )
    env = {k: v for k, v in os.environ.items() if k != ENV} | ({ENV: armed} if armed else {})
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode


@pytest.mark.parametrize(
    ("armed", "killed"),
    [
        (None, False),
        ("manifest", True),
        ("manifest:2", True),
        ("manifest:3", False),
        ("shard-batch", False),
        ("manifest:1:*.json", False),  # with a glob, only hits naming a file count
        ("atomic-rename:1:part-*.arrow", True),
        ("atomic-rename:2:part-*.arrow", False),
        ("atomic-rename:2:manifest.json", True),
        ("atomic-rename:3:manifest.json", False),
    ],
)
def test_failpoint_kills_at_its_nth_hit_only(armed, killed):
    assert exit_status(armed) == (-signal.SIGKILL if killed else 0)


def test_plan_starts_with_a_shard_and_the_manifest_half_written():
    manifest = {"shards": [{}] * 3, "inputs": {"partitions": ["p"] * 5}}
    files = [f"work/a/p{i}.stats.json" for i in range(40)] + ["ledger/a/part-0.arrow"] * 35
    segments = [("ingest", "start", 2.0), ("quality", "ingest: in=", 12.0), ("finish", "x", 4.0)]
    clean = Clean(Path("clean"), manifest, files, segments, sources="")
    trials = plan(22, 0, clean)
    assert [t.how for t in trials[:3]] == ["failpoint", "timer", "failpoint"]
    assert trials[0].spec.startswith("arrow-body:") and trials[0].spec.endswith(":part-*.arrow")
    assert trials[2].spec == "atomic-rename:2:manifest.json"
    timers = [t.spec.split("+") for t in trials if t.how == "timer"]
    assert len(timers) == 11 and {stage for stage, _ in timers[:3]} == {
        "ingest",
        "quality",
        "finish",
    }
    assert all(0 <= float(at) < dict((s, n) for s, _, n in segments)[stage] for stage, at in timers)
    assert moment(15.0, segments) == f"finish+{1.0 * PACE:.2f}"
    assert plan(22, 0, clean) == trials and plan(22, 1, clean) != trials


@pytest.mark.slow
def test_killed_runs_resume_to_the_clean_output():
    result = run_trials(3, seed=0, recheck=False)
    failed = [t for t in result["trials"] if not t["matched"]]
    assert not failed, "\n".join(f"{t['spec']}: {t['problems']}" for t in failed)
    stages = [t["stage"] for t in result["trials"]]
    assert stages[0] == "shards" and stages[2] == "manifest"
    assert any(t["left"] for t in result["trials"])  # a temporary file was there to clean up
