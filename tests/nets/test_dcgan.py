"""DCGAN networks: sized from image_shape, right output shapes and ranges, clear errors for sizes they cannot take."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.nets.dcgan import Discriminator, Generator, seed_and_stages


@pytest.mark.parametrize(
    ("image_shape", "seed", "stages"),
    [((1, 28, 28), 7, 2), ((3, 32, 32), 4, 3), ((1, 8, 8), 2, 2), ((3, 64, 64), 4, 4)],
)
def test_generator_and_discriminator_shapes(image_shape, seed, stages):
    assert seed_and_stages(image_shape, "key") == (seed, stages)
    g = Generator(image_shape, latent_dim=16, base_channels=8)
    d = Discriminator(image_shape, base_channels=8)
    assert g.seed_shape == (8 * 2**stages, seed, seed)

    x = g(torch.randn(5, 16))
    assert x.shape == (5, *image_shape)
    assert x.min() >= -1.0 and x.max() <= 1.0  # tanh output, the data's value range
    assert d(x).shape == (5,)


@pytest.mark.parametrize("bad", [(1, 30, 30), (1, 5, 5), (1, 2, 2), (1, 28, 32), (28, 28)])
def test_unsupported_sizes_raise_config_error(bad):
    with pytest.raises(ConfigError, match="image_shape"):
        Generator(bad, latent_dim=8)
    with pytest.raises(ConfigError, match="image_shape"):
        Discriminator(bad)


def test_unknown_norm_raises_config_error():
    with pytest.raises(ConfigError, match="model.discriminator.norm"):
        Discriminator((1, 8, 8), norm="spectral")


@pytest.mark.parametrize("norm", ["layer", "instance", "none"])
def test_per_sample_norms_do_not_mix_the_batch(norm):
    """WGAN-GP's penalty needs D(x_i) to depend on x_i alone: true for every norm but batch norm."""
    torch.manual_seed(0)
    d = Discriminator((1, 28, 28), base_channels=8, norm=norm).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    x = torch.randn(6, 1, 28, 28)
    together = d(x)
    alone = torch.cat([d(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone)


def test_batch_norm_discriminator_mixes_the_batch_in_training():
    torch.manual_seed(0)
    d = Discriminator((1, 28, 28), base_channels=8, norm="batch").train()
    x = torch.randn(6, 1, 28, 28)
    assert not torch.allclose(d(x)[:3], d(x[:3]))


def test_discriminator_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    d = Discriminator((1, 8, 8), base_channels=8, dropout=0.5)
    x = torch.randn(4, 1, 8, 8)
    assert not torch.equal(d.train()(x), d(x))
    torch.testing.assert_close(d.eval()(x), d(x))


def test_spectral_norm_makes_every_discriminator_weight_1_lipschitz():
    """Power iteration converges over training steps: each layer's weight ends with largest singular value 1
    (the conv kernels as (out, in*k*k) matrices, as torch normalises them), the class embedding's too."""
    torch.manual_seed(0)
    d = Discriminator((1, 28, 28), base_channels=8, norm="none", num_classes=10, spectral_norm=True).train()
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    for _ in range(30):
        d(x, y)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) == 4  # two convs, the logit layer, the class embedding
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.02), type(layer).__name__
    # without it the weights are the plain ones (and so are their names in checkpoints)
    plain = Discriminator((1, 28, 28), base_channels=8, norm="none", num_classes=10)
    assert "to_logit.weight" in plain.state_dict()
    assert float(torch.linalg.matrix_norm(plain.features[0].weight.detach().flatten(1), ord=2)) < 0.5
