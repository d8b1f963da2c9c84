"""The typed pretraining config (the model's shape and presets included; no torch here, so the
pipeline's config loads fast), and the DeepSpeed JSON built from it.

Nothing is hand-written JSON: `deepspeed_config` turns a `PretrainConfig` into the dict that
`deepspeed.initialize` takes (ZeRO stage and offload, precision, batch sizes, clipping, AdamW,
warm-up then cosine learning rate).
"""

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


class GPTConfig(BaseModel, frozen=True, extra="forbid"):
    """The shape of the model (`model.gpt.GPT`) and its training objective."""

    block_size: int = Field(256, gt=0)
    vocab_size: int = Field(8192, gt=0)
    n_layer: int = Field(2, gt=0)
    n_head: int = Field(4, gt=0)
    n_embd: int = Field(128, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = False
    objective: Literal["clm", "mlm"] = "clm"
    mask_prob: float = Field(0.15, gt=0, lt=1, description="mlm: share of tokens masked")


PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 256},
    "125M": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},
    "350M": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 1024},
    "1.3B": {"n_layer": 24, "n_head": 32, "n_embd": 2048, "block_size": 2048},
}


class PretrainConfig(BaseModel, frozen=True, extra="forbid"):
    """Model size, parallelism and optimisation of a pretraining run."""

    preset: Literal["tiny", "125M", "350M", "1.3B"] = "tiny"
    model: dict[str, Any] = Field(default_factory=dict, description="GPTConfig overrides")
    zero_stage: Literal[0, 1, 2, 3] = 2
    zero: dict[str, Any] = Field(
        default_factory=dict, description="DeepSpeed zero_optimization overrides (bucket sizes)"
    )
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model; auto: where CUDA is, not on CPU"
    )
    offload_optimizer: bool = False
    offload_params: bool = Field(False, description="ZeRO stage 3 only")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    micro_batch: int = Field(8, gt=0, description="sequences per rank per micro-batch")
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, gt=0)
    max_steps: int = Field(300, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    log_every: int = Field(10, gt=0)
    eval_every: int = Field(100, gt=0)
    eval_batches: int | None = Field(None, gt=0, description="held-out batches per eval; all")
    eval_tokens: str | None = Field(
        None, description="token shards whose held-out split is evaluated instead of the run's"
    )
    checkpoint_every: int = Field(100, gt=0)
    seed: int = 1337
    num_gpus: int = Field(2, gt=0, description="ranks per machine (processes on CPU)")
    hostfile: str | None = None
    peak_tflops: float | None = Field(None, gt=0, description="per device, for MFU")
    mixture: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='weights of one label\'s values, e.g. {lang: {en: 0.5, zh: 0.3, "*": 0.2}}',
    )

    @model_validator(mode="after")
    def _model_keys_exist(self) -> "PretrainConfig":
        self.gpt_config(vocab_size=256, seq_len=1)  # raises on an unknown model key
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("`offload_params` needs `zero_stage` 3")
        if len(self.mixture) > 1:
            raise ValueError("`mixture` weighs the values of one label (lang, source, ...)")
        if any(w < 0 for weights in self.mixture.values() for w in weights.values()):
            raise ValueError("`mixture` weights are 0 or more")
        return self

    def gpt_config(self, vocab_size: int, seq_len: int) -> GPTConfig:
        """The model: the preset, then `model` overrides, sized for the tokens."""
        fields = {**PRESETS[self.preset], **self.model, "vocab_size": vocab_size}
        fields["block_size"] = max(fields.get("block_size", seq_len), seq_len)
        return GPTConfig(**fields)


def use_bf16(cfg: PretrainConfig, on_gpu: bool, bf16_supported: bool) -> bool:
    if cfg.precision == "bf16" and not bf16_supported:
        raise ValueError("pretrain.precision: bf16 is not supported on this device")
    return cfg.precision == "bf16" or (cfg.precision == "auto" and on_gpu and bf16_supported)


def use_compile(cfg: PretrainConfig, on_gpu: bool) -> bool:
    return on_gpu if cfg.compile == "auto" else cfg.compile


def zero_config(cfg: PretrainConfig, gpt: GPTConfig, params: int, world: int) -> dict[str, Any]:
    """The `zero_optimization` section: the stage, offload, and ZeRO-3's sizes for the model.

    Gradients are reduced while the backward pass runs. ZeRO-3's sizes scale with the hidden
    size h, as DeepSpeed's own "auto" values do: gradients are reduced in buckets of h*h
    elements, parameters are prefetched 0.9*h*h elements ahead, and parameters of at most
    10*h elements (norms, biases) are kept whole on every rank. On one rank ZeRO-3 has nothing
    to shard, so every parameter is kept whole (unless they are offloaded) and no step
    gathers or releases one. `pretrain.zero` overrides any key.
    """
    h = gpt.n_embd
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage > 0:
        zero |= {"overlap_comm": True, "contiguous_gradients": True}
    if cfg.zero_stage == 3:
        zero |= {
            "reduce_bucket_size": h * h,
            "stage3_prefetch_bucket_size": int(0.9 * h * h),
            "stage3_param_persistence_threshold": (
                params if world == 1 and not cfg.offload_params else 10 * h
            ),
            "stage3_max_live_parameters": 10**9,
            "stage3_max_reuse_distance": 10**9,
        }
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return zero | cfg.zero


def deepspeed_config(cfg: PretrainConfig, bf16: bool, zero: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed config dict for `cfg`, with `zero` (`zero_config`) as its ZeRO section."""
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": [0.9, 0.95],
                "eps": 1e-8,
                "weight_decay": cfg.weight_decay,
            },
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": cfg.max_steps,
                "warmup_num_steps": cfg.warmup_steps,
                "warmup_type": "linear",
                "cos_min_ratio": cfg.min_lr_ratio,
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 1 << 30,  # refinery logs its own metrics
        "wall_clock_breakdown": False,
    }
