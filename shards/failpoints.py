"""Failpoints: a test hook that SIGKILLs this process at a named point of a write.

`bench/crash.py` and `tests/flows/test_crash.py` use it to kill `refinery prepare` at the worst
moments (a temporary file written but not renamed, a shard half written) and check that the
re-run still ends with the same output. Set `REFINERY_FAILPOINT` to

    NAME          kill at the first hit of point NAME
    NAME:N        kill at the Nth hit in this process (all threads counted)
    NAME:N:GLOB   count only the hits whose file name matches GLOB (`manifest.json`)

Without the variable `hit` returns after one string comparison. Only this process is killed:
a child it started (the temporary Prefect server of a run without PREFECT_API_URL) lives
on, so the caller kills the process group afterwards. The points:

    atomic-rename    shards/writer.py atomic_path: temporary file complete, before its rename
                     (or, on object storage, before the object is put)
    arrow-body       shards/writer.py write_ipc: temporary file open, no record batch in it
    shard-batch      shards/writer.py ShardWriter.write: after each record batch it takes
    partition-stats  shards/workdir.py StageDir.write_partition: kept and ledger files written,
                     before the stats marker
    ledger-link      shards/ledger.py publish: before each ledger file's link
    manifest         shards/manifest.py write_manifest: before `manifest.json` is written
"""

import fnmatch
import os
import signal
import threading
from pathlib import Path

ENV = "REFINERY_FAILPOINT"

# Read once, at import: `hit` sits on write paths and must cost nothing when unset.
_NAME, _, _REST = os.environ.get(ENV, "").partition(":")
_AT, _, _GLOB = _REST.partition(":")
_lock = threading.Lock()
_hits = 0


def hit(name: str, path: Path | None = None) -> None:
    """SIGKILL this process if `name` is the armed failpoint and this is its armed hit.

    Args:
        name: The failpoint (see the module docstring).
        path: The file being written, matched against the armed GLOB when one is given.
    """
    global _hits
    if name != _NAME or (_GLOB and (path is None or not fnmatch.fnmatch(path.name, _GLOB))):
        return
    with _lock:
        _hits += 1
        if _hits == int(_AT or 1):
            os.kill(os.getpid(), signal.SIGKILL)
