"""Pretrain: launch model/train.py with the DeepSpeed launcher, then report the run.

In: token shards (`tokens/`), a `PretrainConfig`. Out: `<run>/checkpoints/`, `metrics.jsonl`,
`final.json` (held-out perplexity, last checkpoint) and `loss.png`. The run resumes from the
latest checkpoint when there is one.
"""

import base64
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from model.ds_config import PretrainConfig
from shards.writer import atomic_path, write_json
from tasks.progress import StageProgress

TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "model" / "train.py"


def free_port() -> int:
    """A free TCP port on this machine for the launcher's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(run_dir: Path, cfg: PretrainConfig, port: int) -> list[str]:
    """`deepspeed --num_gpus N [--hostfile H] model/train.py --run DIR` for this Python."""
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(cfg.num_gpus)]
    if cfg.hostfile is not None:
        command += ["--hostfile", cfg.hostfile]
    return [*command, "--master_port", str(port), str(TRAIN_SCRIPT), "--run", str(run_dir)]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl, keeping the last line written for each (step, kind) after a resume."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    latest = {(r["step"], "eval_loss" in r): r for r in rows}
    return [latest[k] for k in sorted(latest)]


def plot_loss(rows: list[dict[str, Any]], path: Path) -> None:
    """Training and held-out loss against step, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    heldout = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if heldout:
        ax.plot(*zip(*heldout, strict=True), "o-", label="held-out loss")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title="refinery pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_run_spec(tokens: Path, run_dir: Path, cfg: PretrainConfig) -> list[str]:
    """Write `<run>/run.json` (what every rank reads) and return the launcher command."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"tokens": str(tokens.resolve()), "pretrain": cfg.model_dump(mode="json")}
    write_json(spec, run_dir / "run.json")
    return launcher_command(run_dir, cfg, free_port())


@task(name="pretrain")
def launch_training(tokens: Path, run_dir: Path, cfg: PretrainConfig) -> dict[str, Any]:
    """Run the DeepSpeed launcher to the end; its output goes to the flow's log."""
    logger = get_run_logger()
    command = write_run_spec(tokens, run_dir, cfg)
    logger.info("launching: %s", " ".join(command))
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    with (
        StageProgress("pretrain", cfg.max_steps, unit="steps") as progress,
        subprocess.Popen(command, **pipe) as p,  # type: ignore[call-overload]
    ):
        tail: list[str] = []
        for line in p.stdout:
            tail = [*tail[-40:], line.rstrip()]
            if line.startswith("[train]"):
                logger.info(line.rstrip())
                if (step := re.match(r"\[train\] step=(\d+) loss", line)) is not None:
                    progress.update(int(step.group(1)))
    if p.returncode != 0:
        raise RuntimeError(f"training failed (exit {p.returncode}):\n" + "\n".join(tail))
    return json.loads((run_dir / "final.json").read_text())


@task(name="report_training")
def report_training(run_dir: Path, final: dict[str, Any]) -> None:
    """Publish the loss curve and the final figures as Prefect artifacts."""
    rows = read_metrics(run_dir)
    plot_loss(rows, run_dir / "loss.png")
    table = [r for r in rows if "loss" in r]
    create_table_artifact(key="pretrain-metrics", table=table[-20:], description="Last steps")
    png = base64.b64encode((run_dir / "loss.png").read_bytes()).decode()
    create_markdown_artifact(
        key="pretrain-summary",
        markdown=f"Step **{final['step']}**: held-out perplexity **{final['perplexity']:.2f}** "
        f"(loss {final['eval_loss']:.4f}); checkpoint `{final['checkpoint']}`.\n\n"
        f"![loss curve](data:image/png;base64,{png})",
    )
