"""Loader throughput against training throughput, in tokens per second.

The loader alone: the resumable sampler, gathering rows from the memory-mapped token shards,
and building the model's input tensors, for one rank. Training: `model/train.py` under the
DeepSpeed launcher (2 ranks, ZeRO-2, CPU here unless a GPU is present) for a few steps of each
preset, reading tokens per second from its metrics. The loader must deliver at least 20x what
training consumes.

    .venv/bin/python bench/loader.py [--tokens data/shards/tokens] [--presets tiny,125M]
"""

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from model.data import ResumableSampler
from model.ds_config import PretrainConfig
from model.gpt import GPTConfig
from model.launch import read_metrics, write_run_spec
from model.train import make_batch
from shards.tokens import TokenShards


def loader_tokens_per_sec(tokens: Path, micro_batch: int, seconds: float = 3.0) -> float:
    shards = TokenShards(tokens, "train")
    special = shards.manifest["special_tokens"]
    gpt = GPTConfig(vocab_size=shards.manifest["vocab_size"], block_size=shards.row_len)
    sampler = ResumableSampler(len(shards), 2, 0, micro_batch, seed=0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x, _ = make_batch(shards.gather(sampler.next()), gpt, special, 0, torch.device("cpu"))
        n += x.numel()
    return n / (time.perf_counter() - start)


def training_tokens_per_sec(tokens: Path, preset: str, micro_batch: int, steps: int) -> dict:
    cfg = PretrainConfig(preset=preset, micro_batch=micro_batch, max_steps=steps, log_every=1,
                         eval_every=10**6, checkpoint_every=10**6, warmup_steps=1)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(write_run_spec(tokens, Path(tmp), cfg), check=True, capture_output=True)
        rows = [r for r in read_metrics(Path(tmp)) if "loss" in r][1:]  # first step warms up
    return {
        "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in rows),
        "mfu": statistics.median(r["mfu"] for r in rows) if rows[0]["mfu"] is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=Path, default=Path("data/shards/tokens"))
    parser.add_argument("--presets", default="tiny,125M")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    if not (args.tokens / "manifest.json").exists():
        parser.error(f"no token shards at {args.tokens}: run `make shards` first")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {device}, {torch.get_num_threads()} threads")
    print(f"{'preset':8}{'micro':>6}{'loader tok/s':>15}{'train tok/s':>14}{'ratio':>9}{'MFU':>8}")
    for preset in args.presets.split(","):
        micro = 8 if preset == "tiny" else 1
        loader = loader_tokens_per_sec(args.tokens, micro)
        train = training_tokens_per_sec(args.tokens, preset, micro, args.steps)
        mfu = f"{train['mfu']:.1%}" if train["mfu"] is not None else "-"
        ratio = loader / train["tokens_per_sec"]
        print(
            f"{preset:8}{micro:6}{loader:15,.0f}{train['tokens_per_sec']:14,.1f}{ratio:9,.0f}x{mfu:>8}"
        )


if __name__ == "__main__":
    main()
