"""Pretraining throughput: refinery's DeepSpeed loop against a plain PyTorch loop, same model.

    .venv/bin/python bench/gpu.py [--steps 60] [--presets 125M,350M,1.3B] [--ranks 1]
                                  [--json PATH] [--work DIR]

Token shards are made once (in --work, default data/bench/gpu) from the bundled sample's text
and bench/data's Wikipedia paragraphs and UDHR translations (sources and licences in
bench/data/NOTICE): a byte-level BPE of 8,192 tokens, sequences of --seq-len (1,024) tokens.

For each preset, refinery's `model/train.py` runs under the DeepSpeed launcher on --ranks
ranks (1 GPU, or 1 CPU process), exactly as `refinery pretrain` starts it, for --steps steps:
ZeRO-2 and ZeRO-3 with the causal objective, ZeRO-2 with the masked-LM one, all with
`pretrain.compile` at its default (on where CUDA is), and ZeRO-2 with the other compile
setting. Then the same model in a plain loop in a child process: bf16 autocast on a GPU, fused
AdamW, the same micro-batches, once eager and once with `torch.compile`.

Every run logs every --log-every steps; a figure is the median over the logged windows after
the first (which holds start-up and compilation). tokens/s is all ranks' tokens per second;
MFU is 6N + attention FLOPs per token (model/gpt.py: flops_per_token) times tokens/s over the
devices' dense bf16 peak (H100/H200: 989 TFLOP/s; --peak-tflops to set it), and is left out on
CPU. Peak memory is the GPU's peak allocation on rank 0, or on CPU its peak resident set.

On a machine without CUDA the defaults shrink to what a CPU can run in minutes: the tiny
preset, 30 steps, micro-batch 8, fp32. Those figures say whether the loop costs anything
over a plain one, not what a GPU reaches.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.ds_config import PretrainConfig  # noqa: E402
from model.gpt import GPT, flops_per_token  # noqa: E402
from model.launch import read_final, read_metrics, train_log, write_run_spec  # noqa: E402
from model.train import PEAK_BF16_TFLOPS  # noqa: E402

MICRO_BATCH = {"tiny": 8, "125M": 32, "350M": 16, "1.3B": 8}
SOURCES = [ROOT / "tests/data/sample" / f"{n}.jsonl.gz" for n in ("wiki", "udhr", "variants")]
SOURCES += [ROOT / "bench/data/wiki-paragraphs.jsonl.gz", ROOT / "bench/data/udhr.jsonl.gz"]


def make_tokens(work: Path, seq_len: int) -> Path:
    """Token shards of the sources' texts (made once per sequence length)."""
    from shards.tokens import write_token_manifest
    from tasks.output.tokenize import TokenizeConfig, load_or_train_tokenizer, write_token_shards

    tokens = work / f"tokens-{seq_len}"
    if (tokens / "manifest.json").exists():
        return tokens
    texts = []
    for path in SOURCES:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [t for line in f if (t := json.loads(line).get("text"))]
    texts += [p.read_text(errors="replace") for p in sorted(ROOT.glob("tests/data/sample/*/*.txt"))]
    text = work / "text" / "part-00000.arrow"
    text.parent.mkdir(parents=True, exist_ok=True)
    ids = [f"doc-{i}" for i in range(len(texts))]
    pl.DataFrame({"doc_id": ids, "text": texts, "lang": [None] * len(texts)}).write_ipc(text)
    cfg = TokenizeConfig(seq_len=seq_len, heldout_fraction=0.02)
    tokenizer = load_or_train_tokenizer(cfg, [text], tokens / "tokenizer.json")
    manifest = write_token_shards([text], tokenizer, cfg, tokens)
    write_token_manifest(tokens, {**manifest, "fingerprint": f"bench-gpu-{seq_len}"})
    return tokens


def settle(rows: list[dict[str, Any]], key: str) -> float | None:
    """The median of `key` over the logged windows after the first."""
    values = [r[key] for r in rows[1:] if r.get(key) is not None]
    return statistics.median(values) if values else None


def refinery_run(tokens: Path, work: Path, name: str, args: argparse.Namespace,
                 **settings: Any) -> dict[str, Any]:  # fmt: skip
    """`model/train.py` under the launcher, as `refinery pretrain` starts it."""
    run = work / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    steps = args.steps
    cfg = PretrainConfig(max_steps=steps, log_every=args.log_every, eval_every=steps,
                         eval_batches=1, checkpoint_every=steps, warmup_steps=max(1, steps // 10),
                         num_gpus=args.ranks, peak_tflops=args.peak_tflops, **settings)  # fmt: skip
    start = time.perf_counter()
    for _ in train_log(write_run_spec(tokens, run, cfg)):
        pass
    rows = [r for r in read_metrics(run) if "loss" in r]
    final = read_final(run)
    shutil.rmtree(run / "checkpoints")  # a 1.3B checkpoint is about 18 GB
    return {"run": name, "tokens_per_sec": settle(rows, "tokens_per_sec"),
            "mfu": settle(rows, "mfu"), "peak_mem_gb": max(r["peak_mem_gb"] for r in rows),
            "compiled": final["compiled"], "final_loss": rows[-1]["loss"],
            "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip


def plain_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """The same model and micro-batches in a plain loop on one device (in a child process)."""
    from model.data import ResumableSampler
    from model.gpt import clm_batch
    from model.train import peak_memory, to_device
    from shards.tokens import TokenShards

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    data = TokenShards(Path(spec["tokens"]), "train")
    meta = data.manifest
    cfg = PretrainConfig(preset=spec["preset"], micro_batch=spec["micro_batch"])
    gpt = cfg.gpt_config(meta["vocab_size"], meta["seq_len"])
    torch.manual_seed(cfg.seed)
    model = GPT(gpt).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.weight_decay, fused=cuda)  # fmt: skip
    step_fn = torch.compile(model) if spec["compile"] else model
    sampler = ResumableSampler(len(data), 1, 0, cfg.micro_batch, cfg.seed)
    pad = meta["special_tokens"]["<|pad|>"]
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=cuda)
    rates, start, tokens_per_step = [], time.perf_counter(), cfg.micro_batch * meta["seq_len"]
    for step in range(1, spec["steps"] + 1):
        rows = torch.from_numpy(data.gather(sampler.next()).astype("int64"))
        x, y = clm_batch(to_device(rows, device), pad)
        with autocast:
            _, loss = step_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % spec["log_every"] == 0:
            loss.item()  # the window ends when the GPU has caught up
            now = time.perf_counter()
            rates.append(spec["log_every"] * tokens_per_step / (now - start))
            start = now
    tps = statistics.median(rates[1:])
    flops = flops_per_token(gpt, model.num_params(), meta["seq_len"])
    peak = spec["peak_tflops"]
    return {"tokens_per_sec": round(tps, 1),
            "mfu": round(flops * tps / (peak * 1e12), 4) if peak else None,
            "peak_mem_gb": round(peak_memory(device) / 2**30, 3),
            "final_loss": round(loss.item(), 6)}  # fmt: skip


def plain_run(tokens: Path, name: str, preset: str, compile_: bool, args) -> dict[str, Any]:
    spec = {"tokens": str(tokens), "preset": preset, "micro_batch": args.micro_batch[preset],
            "compile": compile_, "steps": args.steps, "log_every": args.log_every,
            "peak_tflops": args.peak_tflops}  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--plain", json.dumps(spec)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"run": name, **result, "compiled": compile_,
            "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip


def runs_for(preset: str, tokens: Path, work: Path, args) -> list[dict[str, Any]]:
    """The table's rows for one preset."""
    base = {"preset": preset, "micro_batch": args.micro_batch[preset]}
    default_compile = torch.cuda.is_available()
    plan = [
        (f"refinery {preset} ZeRO-2", {"zero_stage": 2}),
        (f"refinery {preset} ZeRO-3", {"zero_stage": 3}),
        (f"refinery {preset} ZeRO-2 mlm", {"zero_stage": 2, "model": {"objective": "mlm"}}),
        (f"refinery {preset} ZeRO-2 compile {'off' if default_compile else 'on'}",
         {"zero_stage": 2, "compile": not default_compile}),
    ]  # fmt: skip
    rows = []
    for name, settings in plan:
        rows.append(refinery_run(tokens, work, name.replace(" ", "-"), args, **base, **settings))
        rows[-1]["run"] = name
        print(json.dumps(rows[-1]), flush=True)
    for compile_ in (False, True):
        name = f"plain PyTorch {preset}, {'torch.compile' if compile_ else 'eager'}"
        rows.append(plain_run(tokens, name, preset, compile_, args))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]], device: str) -> str:
    lines = [f"device: {device}", "",
             "| run | tokens/s | MFU | peak memory | vs plain compiled |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    reference = None
    for r in reversed(rows):
        if r["run"].startswith("plain") and r["compiled"]:
            reference = r["tokens_per_sec"]
        ratio = f"{r['tokens_per_sec'] / reference:.2f}x" if reference else ""
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "-"
        r["line"] = (f"| {r['run']} | {r['tokens_per_sec']:,.0f} | {mfu} | "
                     f"{r['peak_mem_gb']:.2f} GB | {ratio} |")  # fmt: skip
    return "\n".join(lines + [r.pop("line") for r in rows])


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="125M,350M,1.3B" if cuda else "tiny")
    p.add_argument("--steps", type=int, default=60 if cuda else 30)
    p.add_argument("--log-every", type=int, default=10 if cuda else 5)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--ranks", type=int, default=1, help="GPUs (or CPU processes) per run")
    p.add_argument("--micro-batch", type=json.loads, default=MICRO_BATCH,
                   help='per preset, JSON: {"125M": 32}')  # fmt: skip
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--work", type=Path, default=ROOT / "data/bench/gpu")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plain", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.micro_batch = {**MICRO_BATCH, **args.micro_batch}
    if args.peak_tflops is None and cuda:
        name = torch.cuda.get_device_name()
        args.peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return args


def main() -> None:
    args = parse_args()
    if args.plain is not None:  # the child process of `plain_run`
        print(json.dumps(plain_loop(json.loads(args.plain))))
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    args.work.mkdir(parents=True, exist_ok=True)
    tokens = make_tokens(args.work, args.seq_len)
    rows = [r for p in args.presets.split(",") for r in runs_for(p, tokens, args.work, args)]
    print(table(rows, f"{device}, {args.ranks} rank(s), {args.steps} steps, seq {args.seq_len}"))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
