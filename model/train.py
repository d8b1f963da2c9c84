"""The pretraining loop, after nanoGPT's train.py, run on every rank by the DeepSpeed launcher.

    deepspeed --num_gpus 2 model/train.py --run RUN_DIR

RUN_DIR/run.json names the token shards and holds the `PretrainConfig`. The loop resumes from
the latest checkpoint in RUN_DIR/checkpoints/ (model, optimizer, scheduler and the sampler's
position), evaluates held-out perplexity every `eval_every` steps, and writes metrics to
RUN_DIR/metrics.jsonl and the outcome to RUN_DIR/final.json (rank 0).
"""

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import deepspeed
import numpy as np
import torch
import torch.distributed as dist

from model.data import ResumableSampler
from model.ds_config import PretrainConfig, deepspeed_config, use_bf16
from model.gpt import GPT, IGNORE_INDEX, GPTConfig, clm_batch, flops_per_token, mask_tokens
from shards.tokens import TokenShards
from shards.writer import write_json

# Dense bf16 peak per device, for the MFU estimate when `peak_tflops` is not set.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def peak_tflops(cfg: PretrainConfig) -> float | None:
    if cfg.peak_tflops is not None or not torch.cuda.is_available():
        return cfg.peak_tflops
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def make_batch(
    rows: np.ndarray, gpt: GPTConfig, special: dict[str, int], seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and targets from packed rows (B, T+1) of token ids."""
    tokens = torch.from_numpy(rows.astype(np.int64))
    if gpt.objective == "clm":
        x, y = clm_batch(tokens, special["<|pad|>"])
    else:  # masked LM; the mask is seeded by step and rank, so a resumed run draws the same
        generator = torch.Generator().manual_seed(seed)
        x, y = mask_tokens(tokens[:, :-1], gpt, special["<|mask|>"], special["<|pad|>"], generator)
    return x.to(device), y.to(device)


def all_mean(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


@torch.no_grad()
def evaluate(engine: Any, heldout: TokenShards, gpt: GPTConfig, cfg: PretrainConfig,
             special: dict[str, int]) -> tuple[float, float]:  # fmt: skip
    """Held-out loss and perplexity. Every rank runs the same number of batches (ZeRO-3
    gathers parameters collectively), each over its own contiguous block of sequences."""
    rank, world = dist.get_rank(), dist.get_world_size()
    per_rank = len(heldout) // world
    indices = np.arange(rank * per_rank, (rank + 1) * per_rank)
    batches = [indices[i : i + cfg.micro_batch] for i in range(0, per_rank, cfg.micro_batch)]
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=engine.device)  # (loss sum, tokens)
    for i, idx in enumerate(batches[: cfg.eval_batches]):
        x, y = make_batch(heldout.gather(idx), gpt, special, cfg.seed + i, engine.device)
        _, loss = engine(x, y)
        n = (y != IGNORE_INDEX).sum()
        total += torch.stack([loss.double() * n, n.double()])
    engine.train()
    dist.all_reduce(total)
    mean = (total[0] / total[1].clamp(min=1)).item()
    return mean, math.exp(min(mean, 50.0))


class Metrics:
    """Rank 0 appends one JSON object per line to metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path, self.rank = path, dist.get_rank()

    def write(self, **row: Any) -> None:
        if self.rank == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            print("[train] " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def train(run_dir: Path) -> None:
    spec = json.loads((run_dir / "run.json").read_text())
    cfg = PretrainConfig.model_validate(spec["pretrain"])
    on_gpu = torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    tokens = Path(spec["tokens"])
    train_set, heldout = TokenShards(tokens, "train"), TokenShards(tokens, "heldout")
    meta = train_set.manifest
    special = meta["special_tokens"]
    gpt = cfg.gpt_config(meta["vocab_size"], meta["seq_len"])
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    model = GPT(gpt)
    bf16 = use_bf16(cfg, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(cfg, bf16)
    )
    sampler = ResumableSampler(len(train_set), world, rank, cfg.micro_batch, cfg.seed)
    checkpoints = run_dir / "checkpoints"
    step = 0
    if (checkpoints / "latest").exists():
        _, client = engine.load_checkpoint(str(checkpoints))
        step = client["step"]
        sampler.load_state_dict(client["sampler"][rank])

    metrics = Metrics(run_dir / "metrics.jsonl")
    tokens_per_step = cfg.micro_batch * cfg.grad_accum * world * meta["seq_len"]
    flops = flops_per_token(gpt, model.num_params(), meta["seq_len"])
    peak = peak_tflops(cfg)
    eval_loss = ppl = None
    while step < cfg.max_steps:
        start = time.perf_counter()
        loss_sum, digest = 0.0, 0
        for micro in range(cfg.grad_accum):
            idx = sampler.next()
            digest += int(idx.sum())
            seed = cfg.seed + (step * cfg.grad_accum + micro) * world + rank
            x, y = make_batch(train_set.gather(idx), gpt, special, seed, engine.device)
            _, loss = engine(x, y)
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
        step += 1
        seconds = time.perf_counter() - start
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            loss_mean = all_mean(loss_sum / cfg.grad_accum, engine.device)
            throughput = tokens_per_step / seconds
            metrics.write(
                step=step, loss=round(loss_mean, 6), lr=engine.get_lr()[0],
                tokens_per_sec=round(throughput, 1), step_seconds=round(seconds, 4),
                mfu=round(flops * throughput / (peak * 1e12 * world), 4) if peak else None,
                batch_digest=int(all_mean(digest, engine.device) * world),
            )  # fmt: skip
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            eval_loss, ppl = evaluate(engine, heldout, gpt, cfg, special)
            metrics.write(step=step, eval_loss=round(eval_loss, 6), perplexity=round(ppl, 3))
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            states: list[Any] = [None] * world
            dist.all_gather_object(states, sampler.state_dict())
            engine.save_checkpoint(str(checkpoints), tag=f"step{step:08d}",
                                   client_state={"step": step, "sampler": states})  # fmt: skip
    if eval_loss is None:  # resumed at the end: evaluate the final weights once more
        eval_loss, ppl = evaluate(engine, heldout, gpt, cfg, special)
    if rank == 0:
        checkpoint = str(checkpoints / f"step{step:08d}")
        final = {"step": step, "eval_loss": eval_loss, "perplexity": ppl,
                 "checkpoint": checkpoint, "params": model.num_params()}  # fmt: skip
        write_json(final, run_dir / "final.json")
    dist.barrier()


def main() -> None:
    parser = argparse.ArgumentParser(description="refinery pretraining (one rank)")
    parser.add_argument("--run", type=Path, required=True, help="run directory with run.json")
    parser.add_argument("--local_rank", type=int, default=0, help="set by the launcher")
    train(parser.parse_args().run)


if __name__ == "__main__":
    main()
