"""Start model/train.py on every rank with the DeepSpeed launcher, and read back what it wrote.

A run directory holds `run.json` (the token shards and the `PretrainConfig`, read by every
rank), `checkpoints/`, `metrics.jsonl` (one JSON object per logged step or evaluation),
`final.json` (held-out perplexity and the last checkpoint) and `loss.png`. Nothing here
imports Prefect: the `pretrain` flow (flows/pretrain.py) wraps it.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.ds_config import PretrainConfig
from shards.writer import atomic_path, write_json

RUN_SPEC = "run.json"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
FINAL = "final.json"
LOSS_PLOT = "loss.png"
LOG_PREFIX = "[train]"  # train.py's progress lines on stdout start with it
TAIL_LINES = 40  # launcher output kept for the error of a failed run
TRAIN_SCRIPT = Path(__file__).resolve().with_name("train.py")
_STEP = re.compile(re.escape(LOG_PREFIX) + r" step=(\d+) loss")
SHM_DIR = Path("/dev/shm")


def shm_buffers(port: int | str, rank: int | str = "*") -> list[Path]:
    """The allreduce buffers DeepSpeed's shared-memory allreduce on CPU made on this machine
    for the run on rendezvous `port` (one per rank, about 69 MB each, named by uid, master
    address, port and rank). DeepSpeed never removes them."""
    return sorted(SHM_DIR.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_{rank}"))


def release_buffers(port: int | str, rank: int | str = "*") -> None:
    """Unlink the buffers of `shm_buffers`; ranks still running keep their mappings."""
    for path in shm_buffers(port, rank):
        path.unlink(missing_ok=True)


STALE_BUILD_LOCK_S = 15 * 60  # DeepSpeed's JIT builds (its CPU comm op, CPU Adam) take minutes


def stale_build_locks(root: Path | None = None, now: float | None = None) -> list[Path]:
    """Lock files of torch's JIT extension builds older than `STALE_BUILD_LOCK_S`. A rank
    killed while building leaves its lock behind, and every later run would wait on it for
    ever; a live build is over long before.

    Args:
        root: torch's extensions folder (TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions).
        now: The time to age them at (default: now).
    """
    default = Path.home() / ".cache" / "torch_extensions"
    root = root or Path(os.environ.get("TORCH_EXTENSIONS_DIR") or default)
    now = time.time() if now is None else now
    locks = sorted(root.glob("*/*/lock"))
    return [p for p in locks if now - p.stat().st_mtime > STALE_BUILD_LOCK_S]


def free_port() -> int:
    """A free TCP port on this machine for the launcher's rendezvous.

    Returns:
        The port number.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(run_dir: Path, cfg: PretrainConfig, port: int) -> list[str]:
    """`deepspeed --num_gpus N [--hostfile H] model/train.py --run DIR` for this Python.

    Args:
        run_dir: The run directory, with its `run.json`.
        cfg: The pretraining config (ranks per machine, hostfile).
        port: The rendezvous port of rank 0.

    Returns:
        The command line.
    """
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(cfg.num_gpus)]
    if cfg.hostfile is not None:
        command += ["--hostfile", cfg.hostfile]
    return [*command, "--master_port", str(port), str(TRAIN_SCRIPT), "--run", str(run_dir)]


def write_run_spec(tokens: Path, run_dir: Path, cfg: PretrainConfig) -> list[str]:
    """Write `<run>/run.json` (what every rank reads) and return the launcher command.

    Args:
        tokens: The token shards (a prepare output's `tokens/`).
        run_dir: The run directory, created if need be.
        cfg: The pretraining config.

    Returns:
        The launcher command, on a free port.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"tokens": str(tokens.resolve()), "pretrain": cfg.model_dump(mode="json")}
    write_json(spec, run_dir / RUN_SPEC)
    return launcher_command(run_dir, cfg, free_port())


def train_log(command: list[str]) -> Iterator[str]:
    """Run the launcher to the end, yielding train.py's progress lines as they come.

    Args:
        command: The launcher command (`write_run_spec`).

    Yields:
        Each line starting with LOG_PREFIX, without its line end.

    Raises:
        RuntimeError: when the launcher exits non-zero, with the last lines of its output.
    """
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    tail: list[str] = []
    try:
        with subprocess.Popen(command, **pipe) as p:  # type: ignore[call-overload]
            for line in p.stdout:
                tail = [*tail[-TAIL_LINES:], line.rstrip()]
                if line.startswith(LOG_PREFIX):
                    yield line.rstrip()
    finally:  # a rank killed before its own clean-up leaves its buffer
        release_buffers(command[command.index("--master_port") + 1])
    if p.returncode != 0:
        raise RuntimeError(f"training failed (exit {p.returncode}):\n" + "\n".join(tail))


def logged_step(line: str) -> int | None:
    """The step of a training-loss line of `train_log`, or None for any other line."""
    step = _STEP.match(line)
    return None if step is None else int(step.group(1))


def read_final(run_dir: Path) -> dict[str, Any]:
    """The outcome rank 0 wrote to `<run>/final.json` (step, eval_loss, perplexity, ...)."""
    return json.loads((run_dir / FINAL).read_text())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl, keeping the last line written for each (step, kind) after a resume.

    Args:
        run_dir: The run directory.

    Returns:
        The rows in step order, a step's training row before its evaluation row.
    """
    path = run_dir / METRICS
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    latest = {(r["step"], "eval_loss" in r): r for r in rows}
    return [latest[k] for k in sorted(latest)]


PLOTTED_LANGS = 6  # per-language held-out curves on the loss plot, the largest first


def largest_slices(rows: list[dict[str, Any]], label: str, n: int) -> list[str]:
    """The `n` slices of `label` with the most held-out tokens in the last evaluation."""
    last = next((r[f"eval_by_{label}"] for r in reversed(rows) if f"eval_by_{label}" in r), {})
    return sorted(last, key=lambda name: -last[name]["tokens"])[:n]


def plot_loss(rows: list[dict[str, Any]], path: Path) -> None:
    """Training and held-out loss against step, as a PNG.

    Args:
        rows: `read_metrics` rows.
        path: The PNG to write (atomically).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    heldout = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if heldout:
        ax.plot(*zip(*heldout, strict=True), "o-", label="held-out loss")
    for lang in largest_slices(rows, "lang", PLOTTED_LANGS):
        curve = [(r["step"], r["eval_by_lang"][lang]["loss"]) for r in rows
                 if lang in r.get("eval_by_lang", {})]  # fmt: skip
        ax.plot(*zip(*curve, strict=True), ".--", linewidth=0.8, label=f"held-out, {lang}")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title="refinery pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
