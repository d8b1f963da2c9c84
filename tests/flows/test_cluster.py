"""A real cluster: a Dask scheduler and two workers started as separate processes (the `dask
scheduler` and `dask worker` commands), each in a scratch directory of its own, sharing
nothing but an S3 API (moto's server). `prepare --runner dask --dask-address ...` reads its
input from the bucket and writes its output there: the same shards, ledger and tokens as a
run on this machine's threads, also when one worker is SIGKILLed in the middle of a stage."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3fs

from flows.config import load_config
from flows.prepare import prepare
from model.launch import free_port
from shards.manifest import read_manifest
from shards.storage import location
from shards.workdir import work_dir
from tests.conftest import SAMPLE
from tests.flows.test_storage import SETS, digests

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ("web/dolma-sample-0000.warc.gz", "wiki.jsonl.gz", "junk.jsonl")


@dataclass
class Cluster:
    address: str
    workers: list[subprocess.Popen]


def _start(args: list[str], scratch: Path) -> subprocess.Popen:
    scratch.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the code, nothing else of this checkout
    env.pop("PREFECT_API_URL", None)  # the run's own server reaches the workers with its tasks
    log = open(scratch / "log", "w")  # noqa: SIM115 (open while the process runs)
    return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], cwd=scratch,
                            env=env, stdout=log, stderr=log, start_new_session=True)  # fmt: skip


def _worker(address: str, scratch: Path, name: str) -> subprocess.Popen:
    args = ["worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
            "--no-dashboard", "--local-directory", str(scratch / "tmp")]  # fmt: skip
    return _start(args, scratch)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory) -> Iterator[Cluster]:
    """`dask scheduler` and two single-threaded `dask worker` processes (no nanny, so a
    killed worker stays dead), each in its own scratch directory."""
    from distributed import Client

    root = tmp_path_factory.mktemp("cluster")
    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                        "--no-dashboard"], root / "scheduler")  # fmt: skip
    workers = [_worker(address, root / f"w{i}", f"w{i}") for i in range(2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield Cluster(address, workers)
    finally:
        for proc in [*workers, scheduler]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def inputs(s3_server) -> str:
    """The corpus in a bucket: web pages, Wikipedia paragraphs and broken records."""
    fs = s3fs.S3FileSystem()
    bucket = f"refinery-in-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    for name in INPUTS:
        fs.put_file(str(SAMPLE / name), f"{bucket}/corpus/{Path(name).name}")
    return f"s3://{bucket}/corpus"


@pytest.fixture(scope="module")
def threads_run(inputs, tmp_path_factory) -> dict[str, str]:
    """What a run on this machine's threads writes from the same input."""
    out = tmp_path_factory.mktemp("threads") / "out"
    prepare([inputs], str(out), load_config(None, SETS, {}))
    return digests(out)


def balanced(manifest: dict) -> bool:
    totals = manifest["totals"]
    return totals["documents"] == totals["kept"] + totals["dropped"] + totals["quarantined"]


def run_on(cluster: Cluster, inputs: str, url: str, log: Path) -> subprocess.Popen:
    sets = [arg for s in SETS for arg in ("--set", s)]
    args = ["prepare", "--input", inputs, "--output", url, *sets, "--runner", "dask",
            "--dask-address", cluster.address]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            start_new_session=True)  # fmt: skip


def wait_for(proc: subprocess.Popen, log: Path, until: Callable[[], bool] | None = None) -> int:
    """Wait for `proc` (calling `until` meanwhile, once, when it first holds); its status."""
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if until is not None and until():
                until = None
            time.sleep(0.2)
        assert proc.poll() is not None, "prepare on the cluster did not end in 600 s"
        return proc.returncode
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_cluster_sharing_only_object_storage_writes_what_threads_write(
    cluster, inputs, threads_run, tmp_path
):
    url = f"s3://{inputs.split('/')[2]}/run"
    code = wait_for(run_on(cluster, inputs, url, tmp_path / "log"), tmp_path / "log")
    assert code == 0, (tmp_path / "log").read_text()[-3000:]
    assert digests(url) == threads_run
    assert balanced(read_manifest(location(url)))


def test_a_worker_killed_mid_stage_leaves_the_same_output(cluster, inputs, threads_run, tmp_path):
    url = f"s3://{inputs.split('/')[2]}/killed"
    work = work_dir(location(url))  # the layout is shards.workdir's
    victim = cluster.workers[1]

    def mid_stage() -> bool:  # some of normalize's partitions are done, not all
        if not list(work.glob("normalize-*/*.stats.json")):
            return False
        os.kill(victim.pid, signal.SIGKILL)
        return True

    log = tmp_path / "log"
    code = wait_for(run_on(cluster, inputs, url, log), log, mid_stage)
    assert victim.poll() == -signal.SIGKILL, "the worker was not killed during the run"
    assert code == 0, log.read_text()[-3000:]
    assert digests(url) == threads_run
    manifest = read_manifest(location(url))
    assert balanced(manifest)
