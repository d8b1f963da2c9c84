"""Heavy libraries imported on first use, by one thread at a time.

spaCy, datasketch (scipy), trafilatura, fastText, transformers and matplotlib load only in the
steps that use them. Partitions run on worker threads, and Python's per-module import locks do
not make two threads' first imports of one package safe when its modules import each other:
each thread can hold half of the cycle, and one of them gets a partially initialised module
("cannot import name ... (most likely due to a circular import)"). Every deferred import of
such a package runs inside `serial_imports()`; once a package is loaded the lock costs nothing
that matters.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_IMPORT_LOCK = threading.RLock()


@contextmanager
def serial_imports() -> Iterator[None]:
    """Hold the process's import lock for the deferred imports in the block."""
    with _IMPORT_LOCK:
        yield
