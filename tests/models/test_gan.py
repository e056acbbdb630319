"""GAN module: each loss trains, the gradient penalty matches its formula, n_critic schedules the steps,
samples are in range, EMA is what is sampled, and a checkpoint reloads to identical samples."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.errors import ConfigError
from genlab.models.gan import GAN
from genlab.models.gan_losses import discriminator_loss, generator_loss, gradient_penalty, mmd2
from genlab.nets.dcgan import Discriminator, Generator
from genlab.optim import cosine

SHAPE = (1, 8, 8)
LATENT = 8


def make_gan(loss: str = "non_saturating", norm: str | None = None, **kwargs) -> GAN:
    norm = norm or ("layer" if loss == "wgan_gp" else "batch")
    kwargs.setdefault("optimizer", functools.partial(torch.optim.Adam, lr=2e-3, betas=(0.5, 0.999)))
    return GAN(
        Generator(SHAPE, latent_dim=LATENT, base_channels=8),
        Discriminator(SHAPE, base_channels=8, norm=norm),
        latent_dim=LATENT,
        loss=loss,
        **kwargs,
    )


def bars(n: int = 256) -> torch.Tensor:
    """A tiny two-mode target in [-1, 1]: a bright 2-pixel vertical bar at column 2 or column 6."""
    cols = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(0)) * 4 + 2
    x = -torch.ones(n, *SHAPE)
    x[torch.arange(n), 0, :, cols] = 1.0
    x[torch.arange(n), 0, :, cols + 1] = 1.0
    return x


def loader(n: int = 64, batch_size: int = 16, shuffle: bool = False) -> DataLoader:
    x = bars(n)
    return DataLoader(TensorDataset(x, torch.zeros(n)), batch_size=batch_size, shuffle=shuffle)


def trainer(**kwargs) -> L.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "wgan_gp"])
def test_each_loss_trains_with_finite_losses(loss):
    L.seed_everything(0, verbose=False)
    module = make_gan(loss)
    t = trainer(max_epochs=2)
    t.fit(module, loader(), loader(32))
    metrics = t.callback_metrics
    for key in ["train/d_loss", "train/g_loss", "val/loss", "val/d_loss", "val/g_loss", "val/d_acc"]:
        assert key in metrics, key
        assert torch.isfinite(metrics[key]), (key, metrics[key])
    assert ("train/gp" in metrics) == (loss == "wgan_gp")
    assert t.global_step == 2 * 4 * 2  # 4 batches x 2 epochs, one D and one G step each


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones(2)) + bce(fake, torch.zeros(2))
    torch.testing.assert_close(discriminator_loss("non_saturating", real, fake), expected)
    torch.testing.assert_close(generator_loss("non_saturating", fake), bce(fake, torch.ones(2)))
    # hinge: relu(1 - r) = [0, 2], relu(1 + f) = [1.5, 0]
    torch.testing.assert_close(discriminator_loss("hinge", real, fake), torch.tensor(1.0 + 0.75))
    torch.testing.assert_close(discriminator_loss("wgan_gp", real, fake), fake.mean() - real.mean())
    torch.testing.assert_close(generator_loss("wgan_gp", fake), torch.tensor(1.25))


def test_gradient_penalty_of_a_linear_critic_is_known():
    """D(x) = <w, x> + b has input gradient w everywhere: the penalty is (||w|| - 1)^2, and its gradient
    with respect to w is 2 (||w|| - 1) w / ||w||, whatever the interpolation points are."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    real, fake = torch.randn(5, *SHAPE), torch.randn(5, *SHAPE)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)

    w = critic[1].weight.detach().flatten()
    norm = w.norm()
    torch.testing.assert_close(gp, (norm - 1) ** 2)
    gp.backward()  # the penalty must train the critic (create_graph)
    torch.testing.assert_close(critic[1].weight.grad.flatten(), 2 * (norm - 1) * w / norm)


def test_gradient_penalty_interpolates_between_real_and_fake():
    """D(x) = ||x||^2 / 2 has input gradient x: the penalty is (||x_hat|| - 1)^2 at the interpolate x_hat."""
    real, fake = torch.randn(4, *SHAPE), torch.randn(4, *SHAPE)
    torch.manual_seed(1)
    gp = gradient_penalty(lambda x: 0.5 * x.pow(2).flatten(1).sum(1), real, fake)
    torch.manual_seed(1)
    eps = torch.rand(4, 1, 1, 1)
    x_hat = eps * real + (1 - eps) * fake
    torch.testing.assert_close(gp, ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean())


def test_n_critic_takes_that_many_d_steps_per_g_step():
    module = make_gan("wgan_gp", n_critic=3)
    t = trainer(max_epochs=3)  # 4 batches an epoch: 12 D steps, so 4 G steps
    t.fit(module, loader())
    opt_g, opt_d = t.optimizers
    adam_steps = [int(next(iter(opt.state.values()))["step"]) for opt in (opt_g, opt_d)]
    assert adam_steps == [4, 12]
    assert t.global_step == 16  # Lightning counts both networks' optimiser steps


def test_scheduler_decays_both_networks_over_the_planned_steps():
    """With max_steps (which counts D and G steps) the schedules still end exactly at the last step."""
    module = make_gan(scheduler=functools.partial(cosine, min_lr_ratio=0.1), lr_g=1e-3, lr_d=4e-3)
    t = trainer(max_epochs=10, max_steps=12)  # 6 batches: 6 D steps, 6 G steps
    t.fit(module, loader())
    opt_g, opt_d = t.optimizers
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(4e-4)


def test_learning_signal_on_a_two_mode_target():
    """A few hundred steps on 8x8 images of one of two bars bring samples much closer (MMD) to the data."""
    L.seed_everything(0, verbose=False)
    module = make_gan(ema_decay=None)
    target = bars(128)
    before = mmd2(target, module.sample(128) * 2 - 1)
    trainer(max_epochs=10).fit(module, loader(256, 32, shuffle=True))
    after = mmd2(target, module.sample(128) * 2 - 1)
    assert after < 0.5 * before, (before, after)


def test_sample_shape_range_and_seed():
    module = make_gan()
    x = module.sample(6, generator=torch.Generator().manual_seed(3))
    assert x.shape == (6, *SHAPE)
    assert x.min() >= 0.0 and x.max() <= 1.0
    torch.testing.assert_close(module.sample(6, generator=torch.Generator().manual_seed(3)), x)
    assert not torch.equal(module.sample(6, generator=torch.Generator().manual_seed(4)), x)


def test_ema_is_what_sample_uses_and_differs_from_the_raw_generator():
    L.seed_everything(0, verbose=False)
    module = make_gan(ema_decay=0.9)
    trainer(max_epochs=2).fit(module, loader())
    ema, raw = module.generator_ema.module, module.generator
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), raw.parameters()))

    z = torch.randn(6, LATENT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        from_ema = (ema.eval()(z) + 1) / 2
        from_raw = (raw.eval()(z) + 1) / 2
    x = module.sample(6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x, from_ema.clamp(0, 1))
    assert not torch.allclose(x, from_raw.clamp(0, 1))


def test_checkpoint_round_trip_gives_identical_samples(tmp_path: Path):
    L.seed_everything(0, verbose=False)
    module = make_gan()
    t = trainer(max_epochs=1)
    t.fit(module, loader())
    path = tmp_path / "gan.ckpt"
    t.save_checkpoint(path)

    ckpt = torch.load(path, weights_only=True)  # tensors and plain Python only
    assert any(k.startswith("generator_ema.") for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["loss"] == "non_saturating"
    assert ckpt["gan_d_steps"] == 4
    fresh = make_gan()
    fresh.load_state_dict(ckpt["state_dict"])
    expected = module.sample(8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        fresh.sample(8, generator=torch.Generator().manual_seed(0)), expected, rtol=0, atol=0
    )


def test_collapsed_discriminator_is_reported(caplog):
    """A frozen generator (lr_g=0) against a fast discriminator: D loss goes to ~0 and a warning says so."""
    L.seed_everything(0, verbose=False)
    module = make_gan(lr_g=0.0, lr_d=0.05, collapse_patience=5)
    with caplog.at_level(logging.WARNING, logger="genlab.models.gan"):
        trainer(max_epochs=8).fit(module, loader())
    assert any("GAN collapse: train/d_loss" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "wgan_gp", "norm": "batch"}, "model.discriminator.norm=layer"),
        ({"loss": "lsgan"}, "model.loss"),
        ({"n_critic": 0}, "model.n_critic"),
        ({"ema_decay": 1.0}, "model.ema_decay"),
        ({"mode_seeking": -1.0}, "model.mode_seeking"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_gan(**kwargs)


def test_latent_dim_must_match_the_generator():
    with pytest.raises(ConfigError, match="model.latent_dim"):
        GAN(Generator(SHAPE, latent_dim=4), Discriminator(SHAPE), latent_dim=LATENT)


def test_mode_seeking_adds_the_inverse_of_the_generators_noise_sensitivity(monkeypatch):
    """MSGAN's term on top of the adversarial loss of 2b fakes, recomputed here from the same noise; a
    generator that ignores z pays ~weight / 1e-5 for it."""
    module = make_gan("hinge", mode_seeking=2.0)
    monkeypatch.setattr(module, "log_diagnostics", lambda metrics: None)  # no trainer attached
    torch.manual_seed(0)
    loss = module._generator_loss(16, None)
    torch.manual_seed(0)
    z = torch.randn(32, LATENT)
    fake = module.generator(z)
    ratio = (fake[:16] - fake[16:]).abs().mean() / (z[:16] - z[16:]).abs().mean()
    expected = generator_loss("hinge", module.discriminator(fake)) + 2.0 / (ratio + 1e-5)
    torch.testing.assert_close(loss, expected)
    assert 0 < float(ratio) < 1
    with torch.no_grad():
        module.generator.project.weight.zero_()  # every image the same, whatever z
    assert float(module._generator_loss(16, None)) > 1e5


def test_mode_seeking_trains_and_logs_its_ratio():
    L.seed_everything(0, verbose=False)
    module = make_gan("hinge", mode_seeking=1.0)
    t = trainer(max_epochs=2, log_every_n_steps=1)
    t.fit(module, loader())
    ratio = t.callback_metrics["train/ms_ratio"]
    assert torch.isfinite(t.callback_metrics["train/g_loss"]) and 0 < float(ratio) < 2
