"""ConvVAE network: shapes for the supported image sizes, a clear ConfigError for the others."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import ConfigError
from genlab.nets.conv_vae import ConvVAE


@pytest.mark.parametrize(
    ("image_shape", "channels"),
    [((1, 28, 28), (32, 64)), ((1, 8, 8), (8, 16)), ((3, 32, 32), (8, 16, 32)), ((1, 8, 8), (4, 8, 16))],
)
def test_encode_decode_shapes(image_shape, channels):
    net = ConvVAE(image_shape, latent_dim=5, channels=channels, hidden_dim=16)
    x = torch.randn(3, *image_shape)

    mu, logvar = net.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert net.decode(mu).shape == (3, *image_shape)

    out, mu2, _ = net(x)
    assert out.shape == (3, *image_shape)
    torch.testing.assert_close(mu2, mu)  # the posterior mean does not depend on the reparameterisation noise


def test_gradients_reach_every_parameter():
    net = ConvVAE((1, 28, 28), latent_dim=4, channels=(4, 8), hidden_dim=8)
    out, mu, logvar = net(torch.randn(2, 1, 28, 28))
    (out.square().mean() + mu.sum() + logvar.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize(
    ("image_shape", "channels", "needle"),
    [
        ((1, 28, 28), (8, 16, 32), "divisible by 8, got 28x28"),  # 28 -> 14 -> 7 -> 3.5
        ((1, 30, 30), (8, 16), "divisible by 4, got 30x30"),
        ((1, 8, 12), (4, 8, 16, 32), "divisible by 16, got 8x12"),
        ((28, 28), (8,), "must be [C, H, W]"),
        ((1, 28, 28), (), "channels is empty"),
    ],
)
def test_unsupported_shapes_raise_config_error(image_shape, channels, needle):
    with pytest.raises(ConfigError) as err:
        ConvVAE(image_shape, latent_dim=4, channels=channels)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
