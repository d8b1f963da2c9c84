"""The `ablate` flow: compare data recipes by training the same model on each.

Each recipe is the base config with an overlay (quality rules off, another MinHash threshold,
augmentation on, a language allow-list, ...). The recipes run `prepare` one after the other
in one output (`shards.ablation`), so every stage they share, by fingerprint, is computed
once. The first recipe trains the tokenizer every recipe is encoded with. The evaluation set of
every model is the `eval` texts the recipes file names (kept out of every recipe by
`decontam`), or else the first recipe's held-out split: held-out documents are chosen by a hash
of their id, so none of them is in any recipe's training split. Each recipe then trains the
same model, from the same seed, for the same steps and batch (its `pretrain` section is the
base's), and the flow ends with the comparison (`model.compare`) as files and artifacts.

Resumable: a recipe whose folder exists is not prepared again, a run resumes from its last
checkpoint, and a finished run is not started again.
"""

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.config import PipelineConfig, Recipes
from flows.prepare import prepare
from flows.pretrain import launch_training, report_training
from model.compare import markdown, table, write_comparison
from model.launch import FINAL, read_final
from shards.ablation import (
    data_dir,
    eval_dir,
    keep_recipe,
    recipe_dir,
    run_dir,
    shared_tokenizer,
)
from shards.manifest import manifest_path, read_manifest
from shards.tokens import tokenizer_path, tokens_dir
from shards.writer import atomic_path


def prepare_recipe(out: Path, name: str, inputs: list[str], cfg: PipelineConfig) -> None:
    """Run `prepare` for recipe `name` in the shared output, then keep its results."""
    dest = recipe_dir(out, name)
    if manifest_path(dest).exists():
        return
    tokenizer = shared_tokenizer(out)
    if tokenizer.exists():
        cfg = cfg.model_copy(update={"tokenize": cfg.tokenize.model_copy(
            update={"tokenizer": str(tokenizer)})})  # fmt: skip
    prepare(inputs=inputs, output=str(data_dir(out)), config=cfg)
    if not tokenizer.exists():  # the first recipe's, for all
        with atomic_path(tokenizer) as tmp:
            shutil.copyfile(tokenizer_path(tokens_dir(data_dir(out))), tmp)
    keep_recipe(data_dir(out), dest)


def prepare_eval(out: Path, uris: list[str], cfg: PipelineConfig) -> Path:
    """Token shards of the evaluation texts `uris`, all held out, encoded with the shared
    tokenizer: `prepare` with nothing dropped but empty or unreadable records."""
    off = {"enabled": False}
    tree = _merged(cfg, {
        "url_filter": off, "exact_dedup": off, "minhash": off, "quality": off, "augment": off,
        "decontam": {"eval_sets": {}},
        "langid": {"allow": [], "min_score": 0.0, "min_score_by_lang": {}},
        "tokenize": {"tokenizer": str(shared_tokenizer(out)), "heldout_fraction": 1.0},
    })  # fmt: skip
    tokens = tokens_dir(eval_dir(out))
    if not manifest_path(tokens).exists():
        prepare(inputs=uris, output=str(eval_dir(out)), config=tree)
    return tokens


def _merged(cfg: PipelineConfig, overlay: dict[str, dict[str, Any]]) -> PipelineConfig:
    tree = cfg.model_dump(mode="json")
    for section, values in overlay.items():
        tree[section] = {**tree[section], **values}
    return PipelineConfig.model_validate(tree)


def train_recipe(out: Path, name: str, cfg: PipelineConfig, eval_tokens: Path) -> None:
    """Train recipe `name`'s model (resuming a run cut short), evaluated on `eval_tokens`."""
    run = run_dir(out, name)
    if (run / FINAL).exists() and read_final(run)["step"] >= cfg.pretrain.max_steps:
        return
    pretrain = cfg.pretrain.model_copy(update={"eval_tokens": str(eval_tokens)})
    final = launch_training(tokens_dir(recipe_dir(out, name)), run, pretrain)
    report_training(run, final)


@flow(name="ablate")
def ablate(recipes: Recipes, output: str) -> list[dict[str, Any]]:
    """Prepare, tokenize and train every recipe of `recipes` in `output`, then compare them.

    Args:
        recipes: The inputs and each recipe's config (`flows.config.load_recipes`).
        output: The ablation's folder (local).

    Returns:
        The comparison's rows, one per recipe, in the recipes' order.
    """
    out, names = Path(output), list(recipes.configs)
    for name, cfg in recipes.configs.items():
        prepare_recipe(out, name, recipes.inputs, cfg)
        kept = read_manifest(recipe_dir(out, name))["totals"]["kept"]
        get_run_logger().info(f"ablate: recipe {name} prepared, {kept} documents kept")
    if recipes.eval:
        eval_tokens = prepare_eval(out, recipes.eval, recipes.configs[names[0]])
    else:
        eval_tokens = tokens_dir(recipe_dir(out, names[0]))
    for name, cfg in recipes.configs.items():
        train_recipe(out, name, cfg, eval_tokens)
    rows = write_comparison(out, names)
    create_table_artifact(key="ablation", table=table(rows),
                          description="Recipes compared on one evaluation set")  # fmt: skip
    create_markdown_artifact(key="ablation-summary", markdown=markdown(rows))
    return rows
