"""The diffusion UNet: shapes for every shipped image size, timestep conditioning, clear errors."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from genlab.errors import ConfigError
from genlab.nets.unet import UNet, timestep_embedding
from tests.conftest import CONF

TINY = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(2,), num_heads=2)


def randomize_zero_layers(net: UNet) -> None:
    # the last convolution of every residual/attention block and of the output starts at zero (each block is the
    # identity and the net predicts 0 at init); tests of what flows through the net need them live
    for p in net.parameters():
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.1)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 16, 24)])
def test_output_shape_is_input_shape(shape):
    torch.manual_seed(0)
    net = UNet(shape, **TINY)
    randomize_zero_layers(net)
    x = torch.randn(2, *shape)
    out = net(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_output_depends_on_timestep_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = UNet((1, 8, 8), **TINY)
    randomize_zero_layers(net)
    x = torch.randn(2, 1, 8, 8)
    a, b = net(x, torch.tensor([3, 3])), net(x, torch.tensor([500, 500]))
    assert not torch.allclose(a, b)
    (a - b).pow(2).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing


def test_timestep_embedding_is_sinusoidal():
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 6)
    assert emb.shape == (2, 6)
    # t = 0: cos terms are 1, sin terms 0; first frequency is 1, so t = 1 gives cos(1), sin(1)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    one = torch.tensor(1.0)
    torch.testing.assert_close(emb[1, [0, 3]], torch.stack([one.cos(), one.sin()]))
    assert timestep_embedding(torch.tensor([5]), 7).shape == (1, 7)


def test_too_many_levels_for_the_image_size_is_a_config_error():
    with pytest.raises(ConfigError, match=r"28x28 .*divisible by 8.*channel_mults"):
        UNet((1, 28, 28), base_channels=8, channel_mults=(1, 2, 2, 2), attention_levels=())
    with pytest.raises(ConfigError, match="attention_levels"):
        UNet((1, 32, 32), base_channels=8, channel_mults=(1, 2), attention_levels=(2,))
    with pytest.raises(ConfigError, match="num_heads"):
        UNet((1, 32, 32), base_channels=6, channel_mults=(1, 1), attention_levels=(), num_heads=4)


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_shipped_ddpm_net_takes_every_image_dataset(data):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", "model=ddpm"])
    if "image_shape" not in cfg.data:
        pytest.skip(f"{data} is not an image dataset")
    net = instantiate(cfg.model.net)  # reads only ${data.image_shape}
    x = torch.randn(1, *cfg.data.image_shape)
    with torch.no_grad():
        assert net(x, torch.tensor([10])).shape == x.shape
