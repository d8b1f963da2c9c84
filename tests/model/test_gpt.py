import os

import pytest
import torch

from model.ds_config import PretrainConfig, deepspeed_config, zero_config
from model.gpt import GPT, IGNORE_INDEX, GPTConfig, clm_batch, mask_tokens

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32)


def test_shapes_and_weight_tying():
    model = GPT(TINY)
    logits, loss = model(torch.randint(64, (3, 16)), torch.randint(64, (3, 16)))
    assert logits.shape == (3, 16, 64) and loss.ndim == 0
    assert model.lm_head.weight is model.transformer.wte.weight


def test_causal_model_does_not_see_the_future():
    model = GPT(TINY).eval()
    x = torch.randint(64, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 64
    assert torch.allclose(model(x)[0][0, :10], model(y)[0][0, :10], atol=1e-6)


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_overfits_a_small_batch(objective):
    torch.manual_seed(0)
    cfg = TINY.model_copy(update={"objective": objective})
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.randint(3, 64, (4, 17))
    losses = []
    for _ in range(60):
        if objective == "clm":
            x, y = clm_batch(tokens, pad_id=1)
        else:
            g = torch.Generator().manual_seed(0)  # the same mask each step, to overfit it
            x, y = mask_tokens(tokens[:, :-1], cfg, mask_id=2, pad_id=1, generator=g)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_mask_tokens_targets_only_masked_positions():
    tokens = torch.randint(3, 64, (8, 64))
    x, y = mask_tokens(
        tokens, TINY, mask_id=2, pad_id=1, generator=torch.Generator().manual_seed(1)
    )
    chosen = y != IGNORE_INDEX
    assert 0.05 < chosen.float().mean() < 0.3
    assert torch.equal(y[chosen], tokens[chosen])
    assert torch.equal(x[~chosen], tokens[~chosen])
    assert (x[chosen] == 2).float().mean() > 0.6


def test_padding_is_not_a_target():
    _, y = clm_batch(torch.tensor([[5, 6, 1, 1]]), pad_id=1)
    assert y.tolist() == [[6, IGNORE_INDEX, IGNORE_INDEX]]


def test_deepspeed_config_from_typed_config():
    cfg = PretrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True, grad_accum=4,
                         zero={"reduce_bucket_size": 1000})  # fmt: skip
    gpt = cfg.gpt_config(512, 64)
    ds = deepspeed_config(cfg, False, zero_config(cfg, gpt, params=10**6, world=1))
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["zero_optimization"]["reduce_bucket_size"] == 1000  # the user's override
    # Offloaded parameters stay sharded even on one rank; without offload nothing is sharded.
    assert ds["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * gpt.n_embd
    whole = zero_config(cfg.model_copy(update={"offload_params": False}), gpt, 10**6, world=1)
    assert whole["stage3_param_persistence_threshold"] == 10**6
    assert zero_config(cfg, gpt, 10**6, world=2)["stage3_param_persistence_threshold"] == 1280
    assert ds["gradient_accumulation_steps"] == 4 and ds["bf16"] == {"enabled": False}
    assert ds["scheduler"]["params"]["total_num_steps"] == cfg.max_steps
    with pytest.raises(ValueError, match="offload_params"):
        PretrainConfig(offload_params=True)
    with pytest.raises(ValueError, match="n_layr"):
        PretrainConfig(model={"n_layr": 2})


def test_presets_have_their_sizes():
    sizes = {p: GPT(PretrainConfig(preset=p).gpt_config(50304, 1024)).num_params()
             for p in ("tiny", "125M")}  # fmt: skip
    assert 120e6 < sizes["125M"] < 130e6
    assert sizes["tiny"] < 10e6


def test_only_old_build_locks_are_stale(tmp_path):
    from model.launch import STALE_BUILD_LOCK_S, stale_build_locks

    old, fresh = tmp_path / "py311_cpu" / "fused_adam", tmp_path / "py311_cpu" / "shm_comm"
    for folder in (old, fresh):
        folder.mkdir(parents=True)
        (folder / "lock").touch()
    now = (fresh / "lock").stat().st_mtime + 60
    os.utime(old / "lock", (now - STALE_BUILD_LOCK_S - 1, now - STALE_BUILD_LOCK_S - 1))
    assert stale_build_locks(tmp_path, now) == [old / "lock"]
