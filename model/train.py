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
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F

from model.data import Mixture, ResumableSampler
from model.ds_config import PretrainConfig, deepspeed_config, use_bf16, use_compile, zero_config
from model.gpt import GPT, IGNORE_INDEX, GPTConfig, clm_batch, flops_per_token, mask_tokens
from model.launch import CHECKPOINTS, FINAL, LOG_PREFIX, METRICS, RUN_SPEC, release_buffers
from shards.mixture import weights_of
from shards.tokens import TokenShards
from shards.writer import write_json

# Dense bf16 peak per device, for the MFU estimate when `peak_tflops` is not set.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def peak_tflops(cfg: PretrainConfig) -> float | None:
    if cfg.peak_tflops is not None or not torch.cuda.is_available():
        return cfg.peak_tflops
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def to_device(tokens: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to `device`; to a GPU from pinned memory without waiting for the copy."""
    if device.type != "cuda":
        return tokens.to(device)
    return tokens.pin_memory().to(device, non_blocking=True)


def make_batch(
    rows: np.ndarray, gpt: GPTConfig, special: dict[str, int], seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and targets from packed rows (B, T+1) of token ids."""
    tokens = torch.from_numpy(rows.astype(np.int64))
    if gpt.objective == "clm":  # one copy; the shift and the padding mask are made there
        return clm_batch(to_device(tokens, device), special["<|pad|>"])
    # Masked LM: the mask is seeded by step and rank, so a resumed run draws the same.
    generator = torch.Generator().manual_seed(seed)
    x, y = mask_tokens(tokens[:, :-1], gpt, special["<|mask|>"], special["<|pad|>"], generator)
    return to_device(x, device), to_device(y, device)


class Batches:
    """This rank's micro-batches, read one ahead: the next one is gathered from the shards and
    on its way to the GPU while the GPU works on the current one.

    Args:
        run: The run; its sampler is at the next micro-batch to train on.
        drawn: Micro-batches trained on so far in the run (seeds the MLM mask).
    """

    def __init__(self, run: "Run", drawn: int) -> None:
        self.run, self.drawn = run, drawn
        self.ahead: tuple[dict[str, Any], int, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _draw(self) -> tuple[dict[str, Any], int, tuple[torch.Tensor, torch.Tensor]]:
        run, world = self.run, dist.get_world_size()
        state = run.sampler.state_dict()
        idx = run.sampler.next()
        seed = run.cfg.seed + self.drawn * world + dist.get_rank()
        self.drawn += 1
        batch = make_batch(run.train_set.gather(idx), run.gpt, run.special, seed, run.engine.device)
        return state, int(idx.sum()), batch

    def next(self) -> tuple[int, tuple[torch.Tensor, torch.Tensor]]:
        """The next micro-batch (x, y) and the sum of its sequence indices."""
        _, digest, batch = self.ahead if self.ahead is not None else self._draw()
        self.ahead = None
        return digest, batch

    def read_ahead(self) -> None:
        if self.ahead is None:
            self.ahead = self._draw()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position at the first micro-batch not trained on."""
        return self.ahead[0] if self.ahead is not None else self.run.sampler.state_dict()


class Window:
    """Throughput over the steps since the last log: the steps' tokens over the window's wall
    time, read after the log's host sync, so time the GPU still owed is counted."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start a new window (after a log, an evaluation or a checkpoint)."""
        self.start, self.steps = time.perf_counter(), 0

    def read(self, tokens_per_step: int) -> tuple[float, float, int]:
        """(tokens per second, seconds, steps) of the window so far."""
        seconds = time.perf_counter() - self.start
        return self.steps * tokens_per_step / seconds, seconds, self.steps


def peak_memory(device: torch.device) -> int:
    """Bytes at the peak: allocated on the GPU, or this process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def all_mean(value: float | torch.Tensor, device: torch.device) -> float:
    """The mean over ranks; the one host sync of a logged step."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(1)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


@dataclass
class Evaluation:
    """Held-out loss and perplexity, overall and per slice: `by[label][name]` is the mean loss
    and the number of target tokens of the sequences' tokens labelled `name` (per language,
    per source); weighted by tokens, a label's losses add up to the overall loss."""

    loss: float
    perplexity: float
    by: dict[str, dict[str, dict[str, float]]]

    def row(self) -> dict[str, Any]:
        return {"eval_loss": round(self.loss, 6), "perplexity": round(self.perplexity, 3),
                **{f"eval_by_{label}": names for label, names in self.by.items()}}  # fmt: skip


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def target_labels(heldout: TokenShards, idx: np.ndarray, label: str, gpt: GPTConfig,
                  device: torch.device) -> torch.Tensor:  # fmt: skip
    """The label of each target token of the rows at `idx`, flat, as `make_batch` aligns them
    (the next token's for CLM, the token's own for MLM)."""
    labels = heldout.gather(idx, label)
    labels = labels[:, 1:] if gpt.objective == "clm" else labels[:, :-1]
    return torch.from_numpy(labels.astype(np.int64)).reshape(-1).to(device)


@torch.no_grad()
def evaluate(engine: Any, heldout: TokenShards, gpt: GPTConfig, cfg: PretrainConfig,
             special: dict[str, int]) -> Evaluation:  # fmt: skip
    """Held-out loss and perplexity, overall and per language and source where the held-out
    shards label their tokens. Every rank runs the same number of batches (ZeRO-3 gathers
    parameters collectively), each over its own contiguous block of sequences."""
    rank, world, device = dist.get_rank(), dist.get_world_size(), engine.device
    per_rank = len(heldout) // world
    indices = np.arange(rank * per_rank, (rank + 1) * per_rank)
    batches = [indices[i : i + cfg.micro_batch] for i in range(0, per_rank, cfg.micro_batch)]
    names = heldout.label_names
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, tokens)
    sums = {k: torch.zeros(2, len(v), dtype=torch.float64, device=device) for k, v in names.items()}
    for i, idx in enumerate(batches[: cfg.eval_batches]):
        x, y = make_batch(heldout.gather(idx), gpt, special, cfg.seed + i, device)
        logits, _ = engine(x, y)
        targets = y.reshape(-1)
        losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets,
                                 ignore_index=IGNORE_INDEX, reduction="none").double()  # fmt: skip
        counted = (targets != IGNORE_INDEX).double()
        total += torch.stack([losses.sum(), counted.sum()])
        for label, acc in sums.items():
            at = target_labels(heldout, idx, label, gpt, device)
            acc[0].index_add_(0, at, losses)
            acc[1].index_add_(0, at, counted)
    engine.train()
    for t in (total, *sums.values()):
        dist.all_reduce(t)
    mean = (total[0] / total[1].clamp(min=1)).item()
    by = {label: {name: {"loss": round(acc[0, j].item() / acc[1, j].item(), 6),
                         "tokens": int(acc[1, j].item())}
                  for j, name in enumerate(names[label]) if acc[1, j].item() > 0}
          for label, acc in sums.items()}  # fmt: skip
    return Evaluation(mean, perplexity(mean), by)


class Metrics:
    """Rank 0 appends one JSON object per line to metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path, self.rank = path, dist.get_rank()

    def write(self, **row: Any) -> None:
        if self.rank == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            shown = " ".join(f"{k}={v}" for k, v in row.items() if not isinstance(v, dict))
            print(f"{LOG_PREFIX} {shown}", flush=True)  # per-slice figures in the file only


@dataclass
class Run:
    """One rank's run: its config, data, DeepSpeed engine and where it writes."""

    dir: Path
    cfg: PretrainConfig
    gpt: GPTConfig
    special: dict[str, int]
    train_set: TokenShards
    heldout: TokenShards
    engine: Any
    sampler: ResumableSampler
    metrics: Metrics
    peak: float | None  # TFLOPS per device, for MFU
    params: int  # counted before ZeRO-3 partitions them: after, each rank holds only a shard

    @property
    def checkpoints(self) -> Path:
        return self.dir / CHECKPOINTS

    @property
    def seq_len(self) -> int:
        return self.train_set.manifest["seq_len"]

    @property
    def flops_per_token(self) -> float:
        return flops_per_token(self.gpt, self.params, self.seq_len)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.micro_batch * self.cfg.grad_accum * dist.get_world_size() * self.seq_len


def held_out(tokens: Path, cfg: PretrainConfig) -> TokenShards:
    """The held-out split evaluated: the run's own, or that of `pretrain.eval_tokens`, which
    must have been encoded with the same tokenizer and sequence length."""
    own = TokenShards(tokens, "heldout")
    if cfg.eval_tokens is None:
        return own
    other = TokenShards(Path(cfg.eval_tokens), "heldout")
    for key in ("tokenizer_sha256", "seq_len"):
        if other.manifest[key] != own.manifest[key]:
            theirs, ours = other.manifest[key], own.manifest[key]
            raise ValueError(f"pretrain.eval_tokens {cfg.eval_tokens}: {key} {theirs}, "
                             f"not the training tokens' {ours}")  # fmt: skip
    return other


def mixture_of(cfg: PretrainConfig, train_set: TokenShards) -> Mixture | None:
    """`pretrain.mixture` over the training sequences (each by its row's label), or None."""
    if not cfg.mixture:
        return None
    ((label, weights),) = cfg.mixture.items()
    names = train_set.label_names.get(label)
    if names is None:
        have = ", ".join(train_set.label_names) or "none"
        raise ValueError(f"pretrain.mixture: the token shards have no {label!r} labels (they have "
                         f"{have}; tokenize.label_columns adds shard columns)")  # fmt: skip
    unknown = sorted(set(weights) - set(names) - {"*"})
    if unknown:
        raise ValueError(f"pretrain.mixture: no {label} {unknown[0]!r} in the training tokens "
                         f"(they have {', '.join(names)})")  # fmt: skip
    return Mixture(names, train_set.row_labels(label).astype(np.int64), weights_of(names, weights))


def setup(run_dir: Path) -> Run:
    """Join the process group and build this rank's data, model and engine from run.json.

    Args:
        run_dir: The run directory, with the `run.json` the launcher's caller wrote.

    Returns:
        The run, at step 0 (see `resume`).
    """
    spec = json.loads((run_dir / RUN_SPEC).read_text())
    cfg = PretrainConfig.model_validate(spec["pretrain"])
    on_gpu = torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    tokens = Path(spec["tokens"])
    train_set, heldout = TokenShards(tokens, "train"), held_out(tokens, cfg)
    meta = train_set.manifest
    gpt = cfg.gpt_config(meta["vocab_size"], meta["seq_len"])
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    model = GPT(gpt)
    params = model.num_params()
    bf16 = use_bf16(cfg, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    ds = deepspeed_config(cfg, bf16, zero_config(cfg, gpt, model.num_params(False), world))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    if use_compile(cfg, on_gpu):  # in place: the checkpoints' keys stay those of the model
        engine.compile()
    sampler = ResumableSampler(len(train_set), world, rank, cfg.micro_batch, cfg.seed,
                               mixture_of(cfg, train_set))  # fmt: skip
    metrics = Metrics(run_dir / METRICS)
    return Run(run_dir, cfg, gpt, meta["special_tokens"], train_set, heldout, engine, sampler,
               metrics, peak_tflops(cfg), params)  # fmt: skip


def resume(run: Run) -> int:
    """Load the latest checkpoint, if any: model, optimizer, scheduler, sampler position.

    Args:
        run: The run, as `setup` made it.

    Returns:
        The step to continue from (0 without a checkpoint).
    """
    if not (run.checkpoints / "latest").exists():
        return 0
    _, client = run.engine.load_checkpoint(str(run.checkpoints))
    run.sampler.load_state_dict(client["sampler"][dist.get_rank()])
    return client["step"]


def train_step(run: Run, batches: Batches) -> tuple[torch.Tensor, int]:
    """One optimizer step over `grad_accum` micro-batches. Nothing waits for the GPU: the
    loss stays on the device, and the next micro-batch is read while the step runs.

    Returns:
        The summed micro-batch losses (a tensor on the device) and the sum of the sequence
        indices drawn (a digest that tells whether a resumed run sees the same batches).
    """
    loss_sum, digest = torch.zeros((), device=run.engine.device), 0
    for _ in range(run.cfg.grad_accum):
        indices, (x, y) = batches.next()
        digest += indices
        _, loss = run.engine(x, y)
        run.engine.backward(loss)
        batches.read_ahead()
        run.engine.step()
        loss_sum += loss.detach().float()
    return loss_sum, digest


def log_step(run: Run, step: int, loss_sum: torch.Tensor, digest: int, window: Window) -> None:
    """Write a step's mean loss over ranks, learning rate, and the window's throughput and MFU.

    Args:
        run: The run.
        step: Steps done.
        loss_sum: `train_step`'s summed loss on this rank.
        digest: `train_step`'s digest on this rank.
        window: The steps since the last log; restarted here.
    """
    device, world = run.engine.device, dist.get_world_size()
    loss_mean = all_mean(loss_sum / run.cfg.grad_accum, device)  # waits for the GPU
    throughput, seconds, steps = window.read(run.tokens_per_step)
    peak = run.peak
    run.metrics.write(
        step=step, loss=round(loss_mean, 6), lr=run.engine.get_lr()[0],
        tokens_per_sec=round(throughput, 1), window_steps=steps, window_seconds=round(seconds, 6),
        mfu=round(run.flops_per_token * throughput / (peak * 1e12 * world), 4) if peak else None,
        peak_mem_gb=round(peak_memory(device) / 2**30, 3),
        batch_digest=int(all_mean(digest, device) * world),
    )  # fmt: skip
    window.restart()


def save_checkpoint(run: Run, batches: Batches, step: int) -> None:
    """Save the engine's state with every rank's sampler position, as tag `stepNNNNNNNN`."""
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, batches.state_dict())
    run.engine.save_checkpoint(str(run.checkpoints), tag=f"step{step:08d}",
                               client_state={"step": step, "sampler": states})  # fmt: skip


def write_final(run: Run, step: int, result: Evaluation) -> None:
    """Rank 0 writes final.json: the last step, its held-out loss and perplexity, the whole
    model's parameter count and FLOPs per token (the MFU's inputs), and whether it ran
    compiled."""
    if dist.get_rank() == 0:
        checkpoint = str(run.checkpoints / f"step{step:08d}")
        final = {"step": step, "eval_loss": result.loss, "perplexity": result.perplexity,
                 **{f"eval_by_{k}": v for k, v in result.by.items()},
                 "checkpoint": checkpoint, "params": run.params,
                 "flops_per_token": run.flops_per_token,
                 "compiled": bool(run.engine.is_compiled)}  # fmt: skip
        if (mix := run.sampler.mixture) is not None:
            final["mixture"] = {"by": next(iter(run.cfg.mixture)), "groups": mix.summary()}
        write_json(final, run.dir / FINAL)
    dist.barrier()


def train(run_dir: Path) -> None:
    """Train to `max_steps` from the latest checkpoint of `run_dir` (or from the start).

    Args:
        run_dir: The run directory, with its `run.json`.
    """
    run = setup(run_dir)
    cfg, step = run.cfg, resume(run)
    batches, window = Batches(run, step * cfg.grad_accum), Window()
    result: Evaluation | None = None
    while step < cfg.max_steps:
        loss_sum, digest = train_step(run, batches)
        step, window.steps = step + 1, window.steps + 1
        last = step == cfg.max_steps
        if step % cfg.log_every == 0 or last:
            log_step(run, step, loss_sum, digest, window)
        if step % cfg.eval_every == 0 or last:
            result = evaluate(run.engine, run.heldout, run.gpt, cfg, run.special)
            run.metrics.write(step=step, **result.row())
        if step % cfg.checkpoint_every == 0 or last:
            save_checkpoint(run, batches, step)
        if step % cfg.eval_every == 0 or step % cfg.checkpoint_every == 0:
            window.restart()  # the next window times training steps only
    if result is None:  # resumed at the end: evaluate the final weights once more
        result = evaluate(run.engine, run.heldout, run.gpt, cfg, run.special)
    write_final(run, step, result)


def release_shared_memory() -> None:
    """Unlink this rank's allreduce buffer in /dev/shm (`model.launch.shm_buffers`), once
    its training is over."""
    port, rank = os.environ.get("MASTER_PORT"), os.environ.get("RANK")
    if port and rank is not None:
        release_buffers(port, rank)


def main() -> None:
    parser = argparse.ArgumentParser(description="refinery pretraining (one rank)")
    parser.add_argument("--run", type=Path, required=True, help="run directory with run.json")
    parser.add_argument("--local_rank", type=int, default=0, help="set by the launcher")
    try:
        train(parser.parse_args().run)
    finally:
        release_shared_memory()
    # Every file is written and every rank has passed the last barrier. The interpreter's
    # teardown is skipped: in it, a communication thread of a ZeRO-3 run on CPU can be
    # destroyed while still running and abort the rank ("terminate called without an active
    # exception"), which would report a finished run as failed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
