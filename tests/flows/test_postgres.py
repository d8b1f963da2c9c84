"""The Prefect server on PostgreSQL (Debian's postgresql package), as production runs it."""

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import server
from model.launch import free_port

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PG_BIN is None or os.geteuid() != 0 or shutil.which("runuser") is None,
                       reason="needs Debian's postgresql package and root (to run it as postgres)"),
]  # fmt: skip


def as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args]


@pytest.fixture
def postgres():
    # Outside pytest's tmp_path: the postgres user cannot enter root's private directories.
    data = Path(tempfile.mkdtemp(prefix="refinery-pg-"))
    data.chmod(0o755)
    shutil.chown(data, "postgres", "postgres")
    initdb = as_postgres(f"{PG_BIN}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    subprocess.run(initdb, check=True, capture_output=True)
    port = free_port()
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    start = as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(data), "-o", options, "-w", "start",
                        "-l", str(data / "log"))  # fmt: skip
    subprocess.run(start, check=True, capture_output=True)
    try:
        subprocess.run(as_postgres(f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(port),
                                   "prefect"), check=True, capture_output=True)  # fmt: skip
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run(as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(data), "-m", "fast", "stop"),
                       capture_output=True)  # fmt: skip
        shutil.rmtree(data, ignore_errors=True)


def test_prepare_runs_against_a_server_on_postgres(postgres, tmp_path):
    port = free_port()
    env = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres}
    proc = server.start(port, tmp_path / "home", env=env)
    api = f"http://127.0.0.1:{port}/api"
    try:
        out = tmp_path / "out"
        command = [sys.executable, "-m", "flows.cli", "prepare", "--input",
                   "tests/data/sample/notes", "--output", str(out)]  # fmt: skip
        result = subprocess.run(command, env={**os.environ, "PREFECT_API_URL": api},
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
        assert runs and all(r.state.is_completed() for r in runs)
        assert not (tmp_path / "home" / "prefect.db").exists()  # the data went to PostgreSQL
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        time.sleep(1)
