"""DDPM and DDIM update rules against the closed-form posterior q(x_{t-1} | x_t, x_0), and DDIM's
deterministic inversion with a perfect noise oracle. The reference numbers are computed here from the
formulas of Ho et al. (2020, eqs. 4 and 7) and Song et al. (2021, eq. 12), not through the schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.diffusion.samplers import DDIMSampler, DDPMSampler, build_sampler
from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import ConfigError

T = 1000
BETAS = np.linspace(1e-4, 0.02, T)  # DDPM's linear schedule, written out
ALPHA_BAR = np.cumprod(1 - BETAS)


def known_input(seed: int = 0, shape=(4, 1, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    x0 = (
        torch.rand(shape, generator=g, dtype=torch.float64) * 1.8 - 0.9
    )  # inside [-1, 1]: clipping is a no-op
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    return x0, eps


def noised(x0, eps, t):
    return np.sqrt(ALPHA_BAR[t]) * x0 + np.sqrt(1 - ALPHA_BAR[t]) * eps


def posterior(x0, x_t, t):
    """Mean and variance of q(x_{t-1} | x_t, x_0), Ho et al. eq. 7."""
    ab_prev = ALPHA_BAR[t - 1] if t > 0 else 1.0
    mean = (
        np.sqrt(ab_prev) * BETAS[t] / (1 - ALPHA_BAR[t]) * x0
        + np.sqrt(1 - BETAS[t]) * (1 - ab_prev) / (1 - ALPHA_BAR[t]) * x_t
    )
    return mean, (1 - ab_prev) / (1 - ALPHA_BAR[t]) * BETAS[t]


def oracle_output(x_t, t, x0, prediction_type):
    """What a perfect network outputs at (x_t, t) when the clean image is x0."""
    eps = (x_t - np.sqrt(ALPHA_BAR[t]) * x0) / np.sqrt(1 - ALPHA_BAR[t])
    return (
        eps if prediction_type == "epsilon" else np.sqrt(ALPHA_BAR[t]) * eps - np.sqrt(1 - ALPHA_BAR[t]) * x0
    )


def full_step_samplers(prediction_type):
    sched = NoiseSchedule(T, "linear")
    return {
        "ddpm": DDPMSampler(sched, prediction_type),
        # DDIM with eta = 1 over all T steps is the DDPM posterior (Song et al., section 4.1)
        "ddim_eta1": DDIMSampler(sched, prediction_type, num_inference_steps=T, eta=1.0),
    }


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
@pytest.mark.parametrize("name", ["ddpm", "ddim_eta1"])
@pytest.mark.parametrize("t", [0, 1, 10, 250, 999])
def test_step_is_the_closed_form_posterior(name, prediction_type, t):
    sampler = full_step_samplers(prediction_type)[name]
    x0, eps = known_input(t)
    x_t = noised(x0, eps, t)
    out = oracle_output(x_t, t, x0, prediction_type)
    mean, var = posterior(x0, x_t, t)

    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(
        sampler.step(out, t, x_t, noise=torch.zeros_like(z)), mean, rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(
        sampler.step(out, t, x_t, noise=z), mean + np.sqrt(var) * z, rtol=1e-9, atol=1e-9
    )
    if t == 0:  # the last step adds no noise and lands on x_0
        torch.testing.assert_close(sampler.step(out, t, x_t, noise=z), x0, rtol=1e-9, atol=1e-9)


def test_ddpm_step_draws_from_the_generator():
    sampler = DDPMSampler(NoiseSchedule(T))
    x0, eps = known_input()
    x_t = noised(x0, eps, 500)
    out = oracle_output(x_t, 500, x0, "epsilon")
    a = sampler.step(out, 500, x_t, generator=torch.Generator().manual_seed(3))
    b = sampler.step(out, 500, x_t, generator=torch.Generator().manual_seed(3))
    c = sampler.step(out, 500, x_t, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_ddim_with_a_perfect_oracle_inverts_the_noising(prediction_type):
    sampler = DDIMSampler(
        NoiseSchedule(T), prediction_type, num_inference_steps=50, eta=0.0, clip_sample=False
    )
    x0, eps = known_input(7)
    t0 = int(sampler.timesteps[0])
    assert t0 == T - 1 and len(sampler.timesteps) == 50
    x = noised(x0, eps, t0)
    for t in sampler.timesteps.tolist():
        x = sampler.step(oracle_output(x, t, x0, prediction_type), t, x)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-7)


class ConstantImageOracle(torch.nn.Module):
    """A 'network' that knows the data is one fixed image c and outputs the matching noise at any x_t."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = c

    def forward(self, x_t, t):
        ab = torch.as_tensor(ALPHA_BAR, dtype=x_t.dtype)[t].view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * self.c) / (1 - ab).sqrt()


@pytest.mark.parametrize(
    ("name", "steps", "eta"), [("ddpm", None, 0.0), ("ddpm", 20, 0.0), ("ddim", 10, 0.5)]
)
def test_sample_loop_lands_on_the_data(name, steps, eta):
    c = torch.linspace(-0.8, 0.8, 16).view(1, 1, 4, 4)
    sampler = build_sampler(name, NoiseSchedule(T), "epsilon", steps, clip_sample=True, eta=eta)
    x = sampler.sample(ConstantImageOracle(c), (3, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, c.expand(3, 1, 4, 4), rtol=0, atol=1e-4)


def test_timestep_grids():
    sched = NoiseSchedule(T)
    assert DDPMSampler(sched).timesteps.tolist() == list(range(T - 1, -1, -1))
    ddim = DDIMSampler(sched)
    assert ddim.num_inference_steps == 50
    steps = ddim.timesteps.tolist()
    assert steps[0] == 999 and steps[-1] == 19 and all(a - b == 20 for a, b in zip(steps, steps[1:]))
    assert ddim.previous_timestep(19) == -1
    ddim.set_timesteps(7)
    assert len(ddim.timesteps) == 7 and ddim.timesteps[0] == 999 and len(set(ddim.timesteps.tolist())) == 7


def test_bad_settings_are_config_errors():
    sched = NoiseSchedule(100)
    with pytest.raises(ConfigError, match="model.num_inference_steps"):
        DDIMSampler(sched, num_inference_steps=101)
    with pytest.raises(ConfigError, match="model.sampler"):
        build_sampler("euler", sched)
    with pytest.raises(ConfigError, match="model.eta"):
        DDIMSampler(sched, eta=-1.0)
    with pytest.raises(ConfigError, match="model.prediction_type"):
        DDPMSampler(sched, prediction_type="x0")
