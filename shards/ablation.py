"""Where an ablation (`refinery ablate`) keeps its data, runs and comparison.

    <out>/data/                 the prepare output every recipe runs in, one after the other:
                                its work/ holds each stage once per fingerprint, so a stage
                                that recipes share is computed once
    <out>/tokenizer.json        the tokenizer all recipes are encoded with
    <out>/eval/                 with `eval` texts named: their prepare output, all of it
                                held out (eval/tokens/), every model's evaluation set
    <out>/recipes/<name>/       one recipe's results, copied from data/ when its prepare ends:
                                manifest.json, shards, ledger/, tokens/, report/; then run/,
                                its pretraining run
    <out>/comparison.json       per recipe: documents and tokens kept, held-out losses
    <out>/comparison.png        the recipes' loss curves on one plot
    <out>/comparison.html       both, as one page

A recipe's folder appears whole (it is copied beside, then renamed), so a killed ablation finds
each recipe either finished or not started.
"""

import os
import shutil
from pathlib import Path

from shards.ledger import ledger_dir
from shards.manifest import manifest_path, read_manifest, shard_paths
from shards.tokens import tokens_dir
from shards.workdir import report_dir


def data_dir(out: Path) -> Path:
    return out / "data"


def eval_dir(out: Path) -> Path:
    """The prepare output of the evaluation texts an ablation names."""
    return out / "eval"


def shared_tokenizer(out: Path) -> Path:
    return out / "tokenizer.json"


def recipe_dir(out: Path, name: str) -> Path:
    return out / "recipes" / name


def run_dir(out: Path, name: str) -> Path:
    """The pretraining run of recipe `name`."""
    return recipe_dir(out, name) / "run"


def comparison_file(out: Path, kind: str) -> Path:
    """`comparison.<kind>`: json, png or html."""
    return out / f"comparison.{kind}"


def keep_recipe(data: Path, dest: Path) -> None:
    """Copy a finished prepare output's results (not its work) to `dest`, atomically."""
    manifest = read_manifest(data)
    partial = dest.with_name(f".partial-{dest.name}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for shard in shard_paths(data, manifest["shards"]):
        target = partial / shard.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shard, target)
    for folder in (ledger_dir(data), tokens_dir(data), report_dir(data)):
        if folder.is_dir():
            shutil.copytree(folder, partial / folder.name)
    shutil.copy2(manifest_path(data), manifest_path(partial))
    shutil.rmtree(dest, ignore_errors=True)  # a copy of an earlier, unfinished attempt
    os.replace(partial, dest)
