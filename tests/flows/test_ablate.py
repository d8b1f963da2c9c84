"""`refinery ablate`: two recipes on a small corpus, a tiny model each, killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.config import ConfigError, load_recipes
from shards.ablation import comparison_file, data_dir, recipe_dir, run_dir
from shards.manifest import read_manifest

pytestmark = pytest.mark.slow

PRETRAIN = {"model": {"n_layer": 1, "n_head": 2, "n_embd": 64}, "micro_batch": 4,
            "max_steps": 12, "warmup_steps": 2, "log_every": 2, "eval_every": 6,
            "checkpoint_every": 6}  # fmt: skip
BASE = {"tokenize": {"vocab_size": 512, "seq_len": 64, "heldout_fraction": 0.1},
        "ingest": {"partition_bytes": 200000}, "pretrain": PRETRAIN}  # fmt: skip


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> Path:
    from tests.conftest import SAMPLE, write_jsonl

    root = tmp_path_factory.mktemp("ablation")
    (root / "corpus").mkdir()
    for name in ("wiki.jsonl.gz", "junk.jsonl"):
        (root / "corpus" / name).write_bytes((SAMPLE / name).read_bytes())
    (root / "base.yaml").write_text(yaml.safe_dump(BASE))
    # Every 20th paragraph of the corpus, in all its languages, as the evaluation texts.
    paragraphs = pl.read_ndjson(root / "corpus" / "wiki.jsonl.gz").gather_every(20)
    (root / "evals").mkdir()
    write_jsonl(root / "evals" / "qa.jsonl", [{"text": t} for t in paragraphs["text"]])
    spec = {"inputs": ["corpus"], "base": "base.yaml", "eval": ["evals"],
            "recipes": {"filtered": {}, "unfiltered": {"quality": {"enabled": False}}}}  # fmt: skip
    (root / "recipes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "recipes.yaml"


def run_ablate(recipes: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "flows.cli", "ablate", "--recipes", str(recipes),
               "--output", str(out)]  # fmt: skip
    log = open(out.parent / f"{out.name}.log", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, out: Path) -> list[dict]:
    assert proc.wait(timeout=900) == 0, (out.parent / f"{out.name}.log").read_text()[-4000:]
    return json.loads(comparison_file(out, "json").read_text())["recipes"]


def same_table(a: list[dict], b: list[dict]) -> None:
    assert [r["recipe"] for r in a] == [r["recipe"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in ("documents", "kept", "train_tokens", "steps", "eval_tokens"):
            assert x[key] == y[key], key
        assert x["eval_loss"] == pytest.approx(y["eval_loss"], rel=1e-3)
        for label in ("by_lang", "by_source"):
            assert x[label] == pytest.approx(y[label], rel=1e-3)


def test_ablate_compares_recipes_reuses_shared_stages_and_resumes(recipes, tmp_path):
    whole = tmp_path / "whole"
    rows = finish(run_ablate(recipes, whole), whole)

    # The comparison: the unfiltered recipe keeps more, both are evaluated on the same tokens.
    filtered, unfiltered = rows
    assert (filtered["recipe"], unfiltered["recipe"]) == ("filtered", "unfiltered")
    assert unfiltered["kept"] > filtered["kept"]
    assert unfiltered["train_tokens"] > filtered["train_tokens"]
    assert filtered["eval_tokens"] == unfiltered["eval_tokens"]
    assert filtered["eval_loss"] != unfiltered["eval_loss"]
    # Both are evaluated on the evaluation texts, which decontam removed from both.
    assert len(filtered["by_lang"]) >= 5 and set(filtered["by_source"]) == {"qa"}
    assert (whole / "eval" / "tokens" / "manifest.json").exists()
    for name in ("filtered", "unfiltered"):
        decontam = read_manifest(recipe_dir(whole, name))["stages"]["decontam"]
        assert decontam["dropped"]["decontam_overlap"] >= 5, decontam
    assert comparison_file(whole, "png").stat().st_size > 1000
    assert "<table" in comparison_file(whole, "html").read_text()
    for name in ("filtered", "unfiltered"):
        final = json.loads((run_dir(whole, name) / "final.json").read_text())
        assert final["step"] == PRETRAIN["max_steps"]

    # Shared stages ran once: both recipes name the same work directories up to quality, and
    # the shared output holds one directory per stage and fingerprint.
    stages = {n: read_manifest(recipe_dir(whole, n))["stages"] for n in ("filtered", "unfiltered")}
    for stage in ("ingest", "url_filter", "normalize", "exact_dedup", "minhash", "langid"):
        assert stages["filtered"][stage]["work"] == stages["unfiltered"][stage]["work"]
        assert len(list((data_dir(whole) / "work").glob(f"{stage}-*"))) == 1
    assert "quality" in stages["filtered"] and "quality" not in stages["unfiltered"]

    # Killed while the second recipe trains, then run again: the same table.
    out = tmp_path / "killed"
    proc = run_ablate(recipes, out)
    checkpoint = run_dir(out, "unfiltered") / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the ablation ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not comparison_file(out, "json").exists()
    same_table(finish(run_ablate(recipes, out), out), rows)
    # The first recipe was not prepared or trained again.
    log = (tmp_path / "killed.log").read_text().split("refinery: 2 recipes")[0]
    assert log.count("launching:") <= 3


def test_recipes_that_change_what_all_share_are_refused(recipes, tmp_path):
    spec = yaml.safe_load(recipes.read_text())
    spec["recipes"]["bigger"] = {"pretrain": {"max_steps": 99}}
    bad = recipes.parent / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="recipe 'bigger' changes pretrain"):
        load_recipes(bad)
    spec["recipes"] = {"a": {}, "b": {"quality": {"gopher": {"min_wordz": 3}}}}
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"recipe 'b': .*min_wordz"):
        load_recipes(bad)
