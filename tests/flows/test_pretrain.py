"""The pretrain flow and its command line."""

import json
import subprocess
import sys

import pytest

from flows.config import load_config
from flows.pretrain import pretrain

pytestmark = pytest.mark.slow

SETS = ["pretrain.model={n_layer: 1, n_head: 2, n_embd: 32}", "pretrain.micro_batch=4",
        "pretrain.max_steps=6", "pretrain.warmup_steps=2", "pretrain.log_every=2"]  # fmt: skip


@pytest.mark.usefixtures("prefect_server")
def test_flow_trains_reports_and_resumes(token_dir, tmp_path):
    run = tmp_path / "run"
    final = pretrain(tokens=str(token_dir), run=str(run), config=load_config(sets=SETS))
    assert final["step"] == 6 and final["perplexity"] > 1
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 6]  # three logged steps and the final evaluation

    longer = load_config(sets=[*SETS, "pretrain.max_steps=8"])
    assert pretrain(tokens=str(token_dir), run=str(run), config=longer)["step"] == 8


def test_cli_refuses_to_overwrite_checkpoints_without_resume(token_dir, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step00000001")
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "pretrain", "--tokens", str(token_dir),
         "--run", str(tmp_path)], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "has checkpoints: pass --resume" in result.stderr


def test_cli_trains_a_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    prepared = tmp_path / "out"
    prepared.mkdir()
    import polars as pl

    from shards.schema import SHARD_SCHEMA
    from shards.writer import ShardWriter, write_json
    from tasks.output.write_shards import to_shard_table

    texts = [f"Document number {i} talks about rivers, mills and markets." for i in range(200)]
    with ShardWriter(prepared, SHARD_SCHEMA, 1 << 20) as w:
        w.write(
            to_shard_table(pl.DataFrame({"doc_id": [str(i) for i in range(200)], "text": texts}))
        )
    write_json({"shards": w.shards}, prepared / "manifest.json")
    command = [sys.executable, "-m", "flows.cli", "tokenizer", "train", "--input", str(prepared),
               "--vocab-size", "300", "--output", str(tmp_path / "tok.json")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.from_file(str(tmp_path / "tok.json"))
    assert tokenizer.get_vocab_size() == 300
    assert tokenizer.decode(tokenizer.encode(texts[0]).ids) == texts[0]
