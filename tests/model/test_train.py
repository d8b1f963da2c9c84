"""2-rank DeepSpeed runs on CPU (gloo), through the same launcher command the flow uses."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from model.ds_config import PretrainConfig
from model.gpt import GPT, flops_per_token
from model.launch import read_metrics, release_buffers, shm_buffers, write_run_spec

pytestmark = pytest.mark.slow

SMALL = {"model": {"n_layer": 1, "n_head": 2, "n_embd": 64}, "micro_batch": 4, "lr": 3e-3,
         "warmup_steps": 5, "log_every": 1, "eval_every": 10, "seed": 5}  # fmt: skip


def launch(tokens: Path, run: Path, **overrides) -> subprocess.Popen:
    command = write_run_spec(tokens, run, PretrainConfig(**{**SMALL, **overrides}))
    log = open(run / "log.txt", "a")  # noqa: SIM115 (closed by the process ending)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def port(proc: subprocess.Popen) -> str:
    return proc.args[proc.args.index("--master_port") + 1]


def finish(proc: subprocess.Popen, run: Path) -> list[dict]:
    assert proc.wait(timeout=600) == 0, (run / "log.txt").read_text()[-3000:]
    return [r for r in read_metrics(run) if "loss" in r]


@pytest.mark.parametrize("stage", [2, 3])
def test_loss_falls_with_zero_stage(token_dir, tmp_path, stage):
    run = launch(token_dir, tmp_path, zero_stage=stage, max_steps=30, peak_tflops=1.0, log_every=3)
    rows = finish(run, tmp_path)
    assert [r["step"] for r in rows] == list(range(3, 31, 3))
    assert not shm_buffers(port(run))  # each rank unlinked its allreduce buffer
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 0.5, (first, last)
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["step"] == 30 and final["perplexity"] < 512
    assert final["compiled"] is False  # `auto`: not on CPU
    # Per language and per source: weighted by their tokens, the slices' losses add up to the
    # overall held-out loss, and each label covers the same tokens.
    for label, least in (("lang", 5), ("source", 5)):
        slices = final[f"eval_by_{label}"]
        assert len(slices) >= least, slices
        tokens = sum(v["tokens"] for v in slices.values())
        weighted = sum(v["loss"] * v["tokens"] for v in slices.values()) / tokens
        assert weighted == pytest.approx(final["eval_loss"], rel=1e-5)
    assert tokens == sum(v["tokens"] for v in final["eval_by_lang"].values())
    assert "xquad-en" in final["eval_by_source"] and "en" in final["eval_by_lang"]
    evals = [r for r in read_metrics(tmp_path) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert evals[-1]["eval_by_lang"] == final["eval_by_lang"]
    # The whole model's count, also when ZeRO-3 holds a shard of it on each rank, in
    # final.json and in the FLOPs behind MFU (peak 1 TFLOPS per rank, 2 ranks).
    manifest = json.loads((token_dir / "manifest.json").read_text())
    gpt = PretrainConfig(**SMALL).gpt_config(manifest["vocab_size"], manifest["seq_len"])
    params = GPT(gpt).num_params()
    assert final["params"] == params
    flops = flops_per_token(gpt, params, manifest["seq_len"])
    assert final["flops_per_token"] == flops
    # Throughput is the mean over the steps since the last log (an evaluation and checkpoint
    # every 10 steps start a new window), not the last step's.
    tokens_per_step = SMALL["micro_batch"] * 2 * manifest["seq_len"]
    assert [r["window_steps"] for r in rows] == [3, 3, 3, 2, 3, 3, 1, 3, 3, 3]
    for row in rows:
        mean = tokens_per_step * row["window_steps"] / row["window_seconds"]
        assert row["tokens_per_sec"] == pytest.approx(mean, rel=1e-3)
        assert row["mfu"] == pytest.approx(flops * row["tokens_per_sec"] / 2e12, rel=0.01, abs=1e-4)
        assert 0.05 < row["peak_mem_gb"] < 8
    assert (tmp_path / "checkpoints" / "step00000030").is_dir()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_killed_run_resumes_with_the_same_batches_and_losses(token_dir, tmp_path, compiled):
    """An uncompiled run to the end, against one killed after a checkpoint and resumed: the
    same batches, and the same losses (to rounding when the second is compiled)."""
    # With a mixture: half English, the other languages sharing the rest by their own weight.
    settings = {"zero_stage": 2, "max_steps": 40, "checkpoint_every": 4,
                "mixture": {"lang": {"en": 1.0, "*": 0.1}}}  # fmt: skip
    whole = finish(launch(token_dir, tmp_path / "whole", **settings), tmp_path / "whole")

    run = tmp_path / "killed"
    proc = launch(token_dir, run, **settings, compile=compiled)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "latest").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
    proc.wait()
    release_buffers(port(proc))  # as `train_log` does after a launcher it ran
    resumed_from = int((run / "checkpoints" / "latest").read_text().strip().removeprefix("step"))
    assert resumed_from < 40
    resumed = finish(launch(token_dir, run, **settings, compile=compiled), run)

    after = {r["step"]: r for r in resumed if r["step"] > resumed_from}
    assert sorted(after) == list(range(resumed_from + 1, 41))
    for r in whole:
        if r["step"] in after:
            assert r["batch_digest"] == after[r["step"]]["batch_digest"], r["step"]
            tolerance = 2e-3 if compiled else 1e-4
            assert r["loss"] == pytest.approx(after[r["step"]]["loss"], rel=tolerance, abs=1e-5)
    final = json.loads((run / "final.json").read_text())
    assert final["compiled"] is compiled
    groups = final["mixture"]["groups"]
    drawn = {name: g["drawn"] for name, g in groups.items()}
    share = drawn["en"] / sum(drawn.values())
    weights = {name: g["weight"] for name, g in groups.items()}
    assert share == pytest.approx(1.0 / sum(weights.values()), abs=0.01)
    assert groups["en"]["passes"] > 1  # English is a small part of the sample: upsampled
