"""Child processes that end with the command that started them, even when it is killed.

A SIGKILLed `refinery prepare` cannot stop its children itself: its temporary Prefect server
and its process pool's workers would be left running (the workers still writing work files
while a resumed run writes the same ones).
"""

import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # prctl: the signal a process gets when the thread that forked it ends
POLL_S = 1.0


def die_with_parent() -> None:
    """For `subprocess.Popen(preexec_fn=...)` in the main thread: the child gets SIGTERM when
    this process ends (Linux; elsewhere the parent's own shutdown has to end it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def init_worker() -> None:
    """A process pool's worker initializer: `exit_with_parent`, and a quick exit: when the pool
    shuts down, the worker runs its exit handlers (Prefect sends what logs and events it
    holds) and then ends, skipping the interpreter's teardown of torch, spaCy and the rest
    (1.5 s at the end of every run, with the flow waiting)."""
    exit_with_parent()
    atexit.register(_end_now)  # registered first, so it runs after every other handler


def _end_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def exit_with_parent() -> None:
    """End this process once its parent is gone. A process pool may start workers from any of
    its threads, so the parent's pid is watched rather than PR_SET_PDEATHSIG used, which fires
    when the forking thread ends."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
