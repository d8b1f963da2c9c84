"""Child processes that end with the command that started them, even when it is killed.

A SIGKILLed `refinery prepare` cannot stop its children itself: its temporary Prefect server
and its process pool's workers would be left running (the workers still writing work files
while a resumed run writes the same ones).
"""

import contextlib
import ctypes
import os
import signal
import threading

PR_SET_PDEATHSIG = 1  # prctl: the signal a process gets when the thread that forked it ends
POLL_S = 1.0


def die_with_parent() -> None:
    """For `subprocess.Popen(preexec_fn=...)` in the main thread: the child gets SIGTERM when
    this process ends (Linux; elsewhere the parent's own shutdown has to end it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_with_parent() -> None:
    """A process pool's worker initializer: end this process once its parent is gone. The pool
    may start workers from any of its threads, so the parent's pid is watched rather than
    PR_SET_PDEATHSIG used, which fires when the forking thread ends."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
