"""Prefect servers: a lasting local one (SQLite, UI at http://127.0.0.1:4200) in the background,
and the temporary one a command runs its flows against when no server is configured.

    python -m flows.server start [--port 4200] [--home data/prefect]
    python -m flows.server stop  [--home data/prefect]

`start` returns once the API answers. The server's database, log and pid file live in
`--home` (PREFECT_HOME). For PostgreSQL, set PREFECT_API_DATABASE_CONNECTION_URL first.

`TemporaryServer` is what Prefect would start by itself (its API with no UI and no background
services, on the same database), started by the command line before its imports and checks so
that its three seconds of start-up overlap them, and ended with the command, or with the
command's process if that is killed.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from prefect.context import refresh_global_settings_context
from prefect.logging import get_logger
from prefect.settings import get_current_settings, temporary_settings

from flows.lifetime import die_with_parent
from model.launch import free_port


def wait_until_healthy(api_url: str, timeout: float = 120) -> None:
    """Poll `<api_url>/health` until it answers, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} did not answer within {timeout:.0f} s")


def start(port: int, home: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `prefect server start` on 127.0.0.1:`port` in its own process group."""
    home.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "PREFECT_HOME": str(home.resolve()), "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api", **(env or {})}  # fmt: skip
    environ.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ,
                                start_new_session=True)  # fmt: skip
    (home / "server.pid").write_text(str(proc.pid))
    wait_until_healthy(f"http://127.0.0.1:{port}/api")
    return proc


def stop(home: Path) -> bool:
    """Stop the server started with this home (its whole process group)."""
    pidfile = home / "server.pid"
    if not pidfile.exists():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(pidfile.read_text()), signal.SIGTERM)
    pidfile.unlink()
    return True


def temporary_app():  # a FastAPI app
    """The app `TemporaryServer` serves (`uvicorn --factory`): Prefect's API without its UI and
    background services, as Prefect's own temporary server serves it."""
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)


def _flush_to_api() -> None:
    """Send the run logs and events Prefect still holds, while the server is there to take them
    (its workers would retry against a stopped server for a minute at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


class TemporaryServer:
    """A Prefect API of this process's own (see the module docstring). `serve()` waits until
    it answers and points this process and its worker processes at it; `stop()` ends it."""

    TRIES = 3  # ports tried: another process may take a free port before the server binds it

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._tries = 0
        self._start()

    @classmethod
    def needed(cls) -> "TemporaryServer | None":
        """A started server, unless a Prefect API is configured (PREFECT_API_URL)."""
        return None if get_current_settings().api.url else cls()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _start(self) -> None:
        self.port, self._tries = free_port(), self._tries + 1
        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
        root = Path(__file__).resolve().parents[1]  # where `flows` is, from any working directory
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(root), "--factory",
                   "flows.server:temporary_app",
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error",
                   "--lifespan", "on"]  # fmt: skip
        self.proc = subprocess.Popen(command, env=env, preexec_fn=die_with_parent)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Wait until the server answers (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS at
        most, as for Prefect's own), then run the body against it."""
        get_logger("refinery").info(f"Starting temporary server on {self.api_url}")
        self._wait_until_up(get_current_settings().server.ephemeral.startup_timeout_seconds)
        # In the environment, so worker processes inherit it, and in the settings of every
        # thread of this process (Prefect's log and event threads read the process's own).
        # It serves no UI: no "View at" links to one.
        settings = {"PREFECT_API_URL": self.api_url, "PREFECT_UI_URL": ""}
        before = {key: os.environ.get(key) for key in settings}
        os.environ.update({k: v for k, v in settings.items() if before[k] is None})
        refresh_global_settings_context()
        try:
            # No flow-run heartbeats: they feed the zombie detection of a server's background
            # services, which this one does not run, and each flow's end waited up to 1 s for
            # its heartbeat thread.
            this_thread = {"api.url": self.api_url, "flows.heartbeat_frequency": None}
            with temporary_settings(updates=this_thread):
                yield self.api_url
        finally:
            _flush_to_api()
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
            refresh_global_settings_context()

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:  # one client: each costs an SSL context
            while not self._healthy(client):
                if self.proc is None or self.proc.poll() is not None:
                    if self._tries >= self.TRIES:
                        raise ChildProcessError(
                            f"the temporary Prefect server on port {self.port} "
                            "exited while starting (see its output above)"
                        )
                    self._start()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the temporary Prefect server did not answer within "
                                       f"{timeout:.0f} s")  # fmt: skip
                time.sleep(0.05)

    def _healthy(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.api_url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """End the server (at once if it is still starting)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--home", type=Path, default=Path("data/prefect"))
    args = parser.parse_args()
    if args.action == "start":
        start(args.port, args.home)
        print(f"Prefect server up: UI http://127.0.0.1:{args.port}, "
              f"export PREFECT_API_URL=http://127.0.0.1:{args.port}/api")  # fmt: skip
    else:
        print("stopped" if stop(args.home) else f"no server started from {args.home}")


if __name__ == "__main__":
    main()
