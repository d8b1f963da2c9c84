"""Start and stop a local Prefect server (SQLite, UI at http://127.0.0.1:4200) in the background.

    python -m flows.server start [--port 4200] [--home data/prefect]
    python -m flows.server stop  [--home data/prefect]

`start` returns once the API answers. The server's database, log and pid file live in
`--home` (PREFECT_HOME). For PostgreSQL, set PREFECT_API_DATABASE_CONNECTION_URL first.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


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
