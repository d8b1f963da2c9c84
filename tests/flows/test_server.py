"""refinery against a real Prefect server: flow and task states, artifacts, a scheduled
deployment run by a worker, and the UI in headless Chromium."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import server
from model.launch import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> str:
    port = free_port()
    fast = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    proc = server.start(port, tmp_path_factory.mktemp("prefect-home"), env=fast)
    yield f"http://127.0.0.1:{port}/api"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def env_for(api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api}


@pytest.fixture(scope="module")
def prepared(api, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    command = [sys.executable, "-m", "flows.cli", "prepare", "--input", "tests/data/sample",
               "--output", str(out), "--config", "infra/configs/sample.yaml"]  # fmt: skip
    result = subprocess.run(command, env=env_for(api), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "manifest.json").read_text())


def test_run_states_and_artifacts_on_the_server(api, prepared):
    _, manifest = prepared
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = {r.name: r for r in client.read_flow_runs()}
        flows = {client.read_flow(r.flow_id).name: r for r in runs.values()}
        assert {"prepare", "prepare-stages"} <= set(flows)
        assert all(r.state.is_completed() for r in flows.values())
        stages_run = flows["prepare-stages"]
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[stages_run.id]))
        )
        assert tasks and all(t.state.is_completed() for t in tasks)
        names = {stage for t in tasks for stage in t.name.rsplit("-", 1)[0].split("+")}
        assert set(manifest["stages"]) <= names  # map steps are named "ingest+url_filter+..."
        artifacts = {a.key: a for a in client.read_artifacts() if a.key}
    for stage, counts in manifest["stages"].items():
        (row,) = json.loads(artifacts[f"stage-{stage.replace('_', '-')}"].data)
        assert (row["in"], row["kept"]) == (counts["in"], counts["kept"])
    progress = [k for k in artifacts if k.startswith("ingest-") and k.endswith("-progress")]
    assert "prepare-summary" in artifacts and len(progress) == 1
    assert artifacts[progress[0]].data == 100.0


def test_scheduled_deployment_runs_on_a_worker(api, tmp_path):
    out = tmp_path / "scheduled"
    params = {"inputs": [str(REPO / "tests/data/sample/notes")], "output": str(out)}
    pool = subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "test-pool",
                           "--type", "process"], env=env_for(api), capture_output=True)  # fmt: skip
    assert pool.returncode == 0, pool.stderr
    from prefect import flow

    with temporary_settings({PREFECT_API_URL: api}):
        deployment_id = flow.from_source(str(REPO), "flows/prepare.py:prepare").deploy(
            name="every-10s", work_pool_name="test-pool", interval=timedelta(seconds=10),
            parameters=params, print_next_steps=False,
        )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "test-pool"],
        env={**env_for(api), "PREFECT_WORKER_QUERY_SECONDS": "2"}, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline, done = time.monotonic() + 300, []
        while not done and time.monotonic() < deadline:
            time.sleep(2)
            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as c:
                runs = c.read_flow_runs()
            done = [r for r in runs if r.deployment_id == deployment_id and r.state.is_completed()]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    assert done, "no scheduled run completed"
    assert json.loads((out / "manifest.json").read_text())["totals"]["documents"] == 5


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_ui_shows_the_run_and_its_artifacts(api, prepared, tmp_path):
    from playwright.sync_api import sync_playwright

    out, _ = prepared  # not a scheduled run's subflow, which a stopped worker may leave unfinished
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        subflows = [r for r in client.read_flow_runs() if r.parent_task_run_id is not None]
    (run,) = [r for r in subflows if r.parameters.get("output") == str(out)]
    assert run.state.is_completed()
    ui = api.removesuffix("/api")
    shot = Path(os.environ.get("REFINERY_SCREENSHOT", tmp_path / "ui.png"))
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/runs/flow-run/{run.id}", wait_until="networkidle")
        page.get_by_text(run.name).first.wait_for(timeout=60_000)
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("prepare-summary").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_temporary_server_serves_this_process_and_its_children_then_ends(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    temporary = server.TemporaryServer()
    try:
        with temporary.serve() as url:
            assert os.environ["PREFECT_API_URL"] == url  # what worker processes inherit
            with get_client(sync_client=True) as client:
                assert str(client.api_url).rstrip("/") == url and client.api_healthcheck() is None
            from prefect.settings import get_current_settings

            assert get_current_settings().flows.heartbeat_frequency is None
        assert "PREFECT_API_URL" not in os.environ
    finally:
        temporary.stop()
    assert temporary.proc is None
