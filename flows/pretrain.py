"""The `pretrain` flow: token shards to a trained model, resumable from its checkpoints."""

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.config import PipelineConfig
from tasks.pretrain import launch_training, report_training


@flow(name="pretrain")
def pretrain(
    tokens: str,
    run: str,
    config: PipelineConfig = PipelineConfig(),  # noqa: B008 (frozen, so safe to share)
) -> dict[str, Any]:
    """Train on the token shards in `tokens` (a prepare output's `tokens/`) into `run`."""
    final = launch_training(Path(tokens), Path(run), config.pretrain)
    report_training(Path(run), final)
    get_run_logger().info(
        f"pretrain: step {final['step']}, held-out perplexity {final['perplexity']:.2f}"
    )
    return final
