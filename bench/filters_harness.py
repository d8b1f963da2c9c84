"""The timing harness of bench/filters.py, shared by refinery's side and the peers' (stdlib only).

`time_workers` splits the documents into one contiguous share per worker process, pins each
worker to one core, and times every worker over its share in batches, all starting together.
Set-up (imports, loading models and tokenizers, a warm-up on a few documents) is not timed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WARMUP_DOCS = 8


def read_texts(path: Path) -> list[str]:
    """The `text` of each row of a jsonl file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def _worker(
    core: int,
    share: list[str],
    setup: Callable[[], Any],
    process: Callable[[Any, list[str]], int],
    batch_size: int,
    repeat: int,
    barrier: Any,
    results: Any,
) -> None:
    """One worker: pin, set up and warm up, then one timed pass over `share` per run."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    try:
        state = setup()
        process(state, share[:WARMUP_DOCS])
    except BaseException:
        barrier.abort()  # the parent stops waiting; the traceback goes to stderr
        raise
    for _ in range(repeat):
        barrier.wait()
        batches = (share[i : i + batch_size] for i in range(0, len(share), batch_size))
        kept = sum(process(state, batch) for batch in batches)
        results.put(kept)


def _collect(results: Any, procs: list[Any]) -> list[int]:
    """One result per worker; raises if a worker died instead."""
    out: list[int] = []
    while len(out) < len(procs):
        try:
            out.append(results.get(timeout=1))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a worker failed (its traceback is above)") from None
    return out


def time_workers(
    texts: list[str],
    workers: int,
    setup: Callable[[], Any],
    process: Callable[[Any, list[str]], int],
    batch_size: int = 1000,
    repeat: int = 1,
) -> dict:
    """Time `process` over `texts` in `workers` processes; keep the fastest of `repeat` runs.

    Args:
        texts: The documents.
        workers: Worker processes, pinned in turn to the cores this process may use.
        setup: Called once in each worker (module-level, so that it pickles): its models.
        process: Called with the models and each batch; returns how many documents it kept.
        batch_size: Documents per call of `process`.
        repeat: Timed runs over the same documents.

    Returns:
        docs, workers, seconds (of the fastest run, from the common start to the last
        worker's end), docs_per_s, mb_per_s and kept.
    """
    ctx = mp.get_context("spawn")  # no fork: polars' thread pool does not survive one
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    barrier, results = ctx.Barrier(workers + 1), ctx.Queue()
    n = len(texts)
    shares = [texts[w * n // workers : (w + 1) * n // workers] for w in range(workers)]
    procs = [
        ctx.Process(target=_worker, args=(cores[w % len(cores)], share, setup, process,
                                          batch_size, repeat, barrier, results))
        for w, share in enumerate(shares)
    ]  # fmt: skip
    for p in procs:
        p.start()
    runs = []
    try:
        for _ in range(repeat):
            barrier.wait()
            start = time.perf_counter()
            kept = _collect(results, procs)
            runs.append((time.perf_counter() - start, sum(kept)))
    except threading.BrokenBarrierError:
        raise RuntimeError("a worker failed during set-up (its traceback is above)") from None
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    seconds, kept = min(runs)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"docs": n, "workers": workers, "seconds": round(seconds, 3),
            "docs_per_s": round(n / seconds, 1), "mb_per_s": round(n_bytes / 1e6 / seconds, 3),
            "kept": kept}  # fmt: skip


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every contender script takes: its documents, workers, batches, repeats, and
    where its row goes."""
    parser.add_argument("--docs-file", type=Path, required=True, help="jsonl with a text field")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs; the fastest counts")
    parser.add_argument("--json", type=Path, required=True, help="output file for the row")
