"""Noise schedules and the forward process, against formulas written out independently with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import ConfigError


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 50])
def test_alphas_cumprod_decrease_inside_unit_interval(beta_schedule, T):
    ab = NoiseSchedule(T, beta_schedule).alphas_cumprod
    assert ab.shape == (T,)
    assert torch.all(ab > 0) and torch.all(ab < 1)
    assert torch.all(ab[1:] < ab[:-1])
    assert ab[0] > 0.99 and ab[-1] < 0.01  # from almost clean data to almost pure noise


def test_linear_matches_ddpm():
    betas = np.linspace(1e-4, 0.02, 1000)
    expected = np.cumprod(1 - betas)
    np.testing.assert_allclose(NoiseSchedule(1000, "linear").alphas_cumprod.numpy(), expected, rtol=1e-12)


def test_cosine_matches_closed_form():
    # improved DDPM: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2); only the last
    # steps differ, where beta is capped at 0.999
    T, s = 1000, 0.008
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = np.array(f[1:]) / f[0]
    ab = NoiseSchedule(T, "cosine").alphas_cumprod.numpy()
    np.testing.assert_allclose(ab[:990], expected[:990], rtol=1e-10)


def test_add_noise_and_conversions_are_consistent():
    sched = NoiseSchedule(1000, "cosine")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    ab = sched.alphas_cumprod[t].view(-1, 1, 1, 1)

    x_t = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    v = sched.velocity(x0, eps, t)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    assert sched.target(x0, eps, t, "epsilon") is eps
    torch.testing.assert_close(sched.target(x0, eps, t, "v"), v)

    for prediction_type, output in [("epsilon", eps), ("v", v)]:
        x0_hat, eps_hat = sched.to_x0_eps(output, x_t, t, prediction_type)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)
    for i, step in enumerate(t.tolist()):
        torch.testing.assert_close(sched.eps_from_x0(x0[i : i + 1], x_t[i : i + 1], step), eps[i : i + 1])


def test_one_timestep_for_the_whole_batch():
    sched = NoiseSchedule(100)
    x0, eps = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    x_t = sched.add_noise(x0, eps, torch.full((3,), 40))
    x0_hat, _ = sched.to_x0_eps(eps, x_t, 40, "epsilon")
    torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)


def test_unknown_options_are_config_errors():
    with pytest.raises(ConfigError, match="model.beta_schedule"):
        NoiseSchedule(1000, "quadratic")
    with pytest.raises(ConfigError, match="model.prediction_type"):
        NoiseSchedule(10).target(torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.long), "x0")
