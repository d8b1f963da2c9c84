"""The `pretrain` flow: token shards to a trained model, resumable from its checkpoints.

In: token shards (`tokens/`), a `PretrainConfig`. Out, in the run directory (model/launch.py):
`checkpoints/`, `metrics.jsonl`, `final.json` (held-out perplexity overall and per language
and source, last checkpoint) and `loss.png`. The run resumes from the latest checkpoint when
there is one.
"""

import base64
import math
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.config import PipelineConfig
from model.ds_config import PretrainConfig
from model.launch import (
    LOSS_PLOT,
    logged_step,
    plot_loss,
    read_final,
    read_metrics,
    stale_build_locks,
    train_log,
    write_run_spec,
)
from tasks.progress import StageProgress


@task(name="pretrain")
def launch_training(tokens: Path, run_dir: Path, cfg: PretrainConfig) -> dict[str, Any]:
    """Run the DeepSpeed launcher to the end; its output goes to the flow's log.

    Args:
        tokens: The token shards.
        run_dir: The run directory.
        cfg: The pretraining config.

    Returns:
        The run's `final.json`.
    """
    logger = get_run_logger()
    for lock in stale_build_locks():  # a build killed half way: its lock would hang the run
        logger.warning("removing the stale build lock %s (a killed run left it)", lock)
        lock.unlink(missing_ok=True)
    command = write_run_spec(tokens, run_dir, cfg)
    logger.info("launching: %s", " ".join(command))
    with StageProgress("pretrain", cfg.max_steps, unit="steps") as progress:
        for line in train_log(command):
            logger.info(line)
            if (step := logged_step(line)) is not None:
                progress.update(step)
    return read_final(run_dir)


@task(name="report_training")
def report_training(run_dir: Path, final: dict[str, Any]) -> None:
    """Publish the loss curve and the final figures as Prefect artifacts.

    Args:
        run_dir: The run directory.
        final: The run's `final.json`.
    """
    rows = read_metrics(run_dir)
    plot_loss(rows, run_dir / LOSS_PLOT)
    table = [r for r in rows if "loss" in r]
    create_table_artifact(key="pretrain-metrics", table=table[-20:], description="Last steps")
    if mixture := final.get("mixture"):
        groups = [{mixture["by"]: name, **figures} for name, figures in mixture["groups"].items()]
        create_table_artifact(key="pretrain-mixture", table=groups,
                              description="Sequences drawn per epoch by the mixture; passes "
                              "above 1 are upsampling")  # fmt: skip
        for row in groups:
            if row["passes"] > 1:
                get_run_logger().info(f"mixture: {row[mixture['by']]} upsampled, "
                                      f"{row['passes']} passes over it per epoch")  # fmt: skip
    if slices := slice_table(final):
        create_table_artifact(key="pretrain-slices", table=slices,
                              description="Held-out loss per language and per source")  # fmt: skip
    png = base64.b64encode((run_dir / LOSS_PLOT).read_bytes()).decode()
    create_markdown_artifact(
        key="pretrain-summary",
        markdown=f"Step **{final['step']}**: held-out perplexity **{final['perplexity']:.2f}** "
        f"(loss {final['eval_loss']:.4f}); checkpoint `{final['checkpoint']}`.\n\n"
        f"![loss curve](data:image/png;base64,{png})",
    )


def slice_table(final: dict[str, Any]) -> list[dict[str, Any]]:
    """final.json's held-out loss per language and per source, as table rows."""
    return [
        {"by": key.removeprefix("eval_by_"), "slice": name, "tokens": v["tokens"],
         "loss": v["loss"], "perplexity": round(math.exp(min(v["loss"], 50.0)), 3)}
        for key in sorted(k for k in final if k.startswith("eval_by_"))
        for name, v in sorted(final[key].items(), key=lambda item: -item[1]["tokens"])
    ]  # fmt: skip


@flow(name="pretrain")
def pretrain(
    tokens: str,
    run: str,
    config: PipelineConfig = PipelineConfig(),  # noqa: B008 (frozen, so safe to share)
) -> dict[str, Any]:
    """Train on the token shards in `tokens` (a prepare output's `tokens/`) into `run`.

    Args:
        tokens: The token shards' directory.
        run: The run directory (checkpoints, metrics, final figures).
        config: The pipeline config; the flow reads its `pretrain` section.

    Returns:
        The run's `final.json`: step, eval_loss, perplexity, checkpoint, params.
    """
    final = launch_training(Path(tokens), Path(run), config.pretrain)
    report_training(Path(run), final)
    get_run_logger().info(
        f"pretrain: step {final['step']}, held-out perplexity {final['perplexity']:.2f}"
    )
    return final
