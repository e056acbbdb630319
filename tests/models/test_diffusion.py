"""Diffusion family: learning on a tiny image set, EMA sampling, fixed-noise validation, checkpoints."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.errors import ConfigError
from genlab.models.base import ImageGenerator
from genlab.models.diffusion import Diffusion
from genlab.nets.unet import UNet

SHAPE = (1, 8, 8)


def make_model(seed: int = 0, **kwargs) -> Diffusion:
    torch.manual_seed(seed)
    net = UNet(
        SHAPE, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2
    )
    kwargs = {"num_train_timesteps": 50, "ema_decay": 0.9, **kwargs}
    return Diffusion(net, optimizer=functools.partial(torch.optim.Adam, lr=3e-3), **kwargs)


def images(n: int = 256, seed: int = 0) -> torch.Tensor:
    """Bars: a bright horizontal or vertical stripe at a random position on a dark background, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(n, *SHAPE)
    pos = torch.randint(0, 8, (n,), generator=g)
    vertical = torch.rand(n, generator=g) < 0.5
    for i in range(n):
        if vertical[i]:
            x[i, :, :, pos[i]] = 1.0
        else:
            x[i, :, pos[i], :] = 1.0
    return x


def loader(x: torch.Tensor, shuffle: bool) -> DataLoader:
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=32, shuffle=shuffle)


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def val_loss(model: Diffusion, x: torch.Tensor) -> float:
    return trainer(1).validate(model, loader(x, shuffle=False), verbose=False)[0]["val/loss"]


def test_is_an_image_generator():
    assert isinstance(make_model(), ImageGenerator)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_loss_goes_down_and_val_loss_is_repeatable(prediction_type):
    model = make_model(prediction_type=prediction_type)
    train, val = images(256, seed=0), images(64, seed=1)
    before = val_loss(model, val)
    assert val_loss(model, val) == before  # fixed noise: only the weights move the number
    trainer(30).fit(model, loader(train, shuffle=True))
    after = val_loss(model, val)
    assert after < 0.8 * before, (before, after)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for a few steps (EMA differs from the raw weights), and a checkpoint of it."""
    model = make_model(seed=0)
    fit = trainer(30)
    fit.fit(model, loader(images(128), shuffle=True))
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    fit.save_checkpoint(path)
    return model, path


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 10), ("ddpm", None)])
def test_samples_have_the_data_shape_and_unit_range(trained, sampler, steps):
    model, _ = trained
    model.sampler = model.make_sampler(sampler, steps)
    x = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, *SHAPE) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0
    assert torch.equal(x, model.sample(5, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(x, model.sample(5, generator=torch.Generator().manual_seed(1)))


def test_sample_uses_the_ema_weights(trained):
    model, _ = trained
    model.sampler = model.make_sampler("ddim", 5)
    ema = dict(model.ema.module.named_parameters())
    assert any(not torch.equal(p, ema[name]) for name, p in model.net.named_parameters())
    before = model.sample(3, generator=torch.Generator().manual_seed(0))
    saved = {k: v.clone() for k, v in model.net.state_dict().items()}
    with torch.no_grad():
        for p in model.net.parameters():
            p.zero_()
    assert torch.equal(before, model.sample(3, generator=torch.Generator().manual_seed(0)))
    model.net.load_state_dict(saved)


def test_ema_decay_warms_up_then_stays_at_ema_decay():
    model = make_model(ema_decay=0.9)
    expected = None
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0] + [5.0] * 40):
        with torch.no_grad():
            for p in model.net.parameters():
                p.fill_(value)
        model.update_ema()
        decay = min(0.9, (1 + n) / (10 + n))  # diffusers' warm-up: short runs are not stuck near the init
        expected = value if n == 0 else decay * expected + (1 - decay) * value
        for p in model.ema.module.parameters():
            torch.testing.assert_close(p, torch.full_like(p, expected))
    assert int(model.ema.n_averaged) == 44


def test_ema_updates_once_per_optimizer_step():
    model = make_model()
    trainer(3, accumulate_grad_batches=2).fit(model, loader(images(256), shuffle=True))
    assert int(model.ema.n_averaged) == 3


def test_checkpoint_reloads_with_weights_only_and_samples_identically(trained):
    model, path = trained
    ckpt = torch.load(path, weights_only=True)
    assert any(k.startswith("ema.") for k in ckpt["state_dict"])  # the EMA weights travel with the checkpoint

    hparams = dict(ckpt["hyper_parameters"])
    fresh = make_model(seed=123, **hparams)  # other initial weights, same hyperparameters
    fresh.load_state_dict(ckpt["state_dict"])
    model.sampler = model.make_sampler("ddim", 10)
    fresh.sampler = fresh.make_sampler("ddim", 10)
    a = model.sample(4, generator=torch.Generator().manual_seed(0))
    b = fresh.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_hyperparameters_are_plain_and_sampler_comes_from_config():
    model = make_model(
        sampler="ddpm", num_inference_steps=None, beta_schedule="cosine", num_train_timesteps=100
    )
    assert set(model.hparams) >= {
        "num_train_timesteps",
        "beta_schedule",
        "prediction_type",
        "sampler",
        "ema_decay",
    }
    assert "net" not in model.hparams and "optimizer" not in model.hparams
    assert len(model.sampler.timesteps) == 100  # ddpm default: all T steps
    assert len(make_model(sampler="ddim", num_train_timesteps=100).sampler.timesteps) == 50
    assert make_model(ema_decay=None).ema is None


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="model.sampler"):
        make_model(sampler="euler")
    with pytest.raises(ConfigError, match="model.ema_decay"):
        make_model(ema_decay=1.5)
    with pytest.raises(ConfigError, match="model.beta_schedule"):
        make_model(beta_schedule="sigmoid")
