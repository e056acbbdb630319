"""Reverse-process samplers (DDPM, DDIM) that turn any noise-prediction network `net(x_t, t)` into images.

Shaped like diffusers' schedulers: `set_timesteps(n)` picks the steps, `step(model_output, t, x_t)` goes one
step back, and `sample(net, shape)` is the loop. They hold no weights, so one trained network samples with
either of them at any number of steps. `ClassifierFreeGuidance` turns a class-conditional network into such a
noise predictor for given labels and guidance scale, so both samplers guide the same way.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from genlab.diffusion.schedules import NoiseSchedule, check_prediction_type
from genlab.errors import ConfigError

NoisePredictor = Callable[[Tensor, Tensor], Tensor]  # net(x_t [B, ...], t [B] long) -> output [B, ...]


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved: the same seed gives the same images
    whether the network runs on the CPU or a GPU."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


class ClassifierFreeGuidance:
    """A noise predictor `(x_t, t) -> eps_u + w (eps_c - eps_u)` over a class-conditional `net(x_t, t, y)`
    (Ho & Salimans 2022): eps_c is the prediction for `labels`, eps_u the one for the null class (`y=None`).

    w = 0 is the unconditional model, w = 1 the conditional one, w > 1 trades diversity for class fidelity.
    Both predictions come from one forward pass over the doubled batch; at w = 0 and w = 1 only the pass
    that is needed runs, so those give exactly the unconditional and the conditional prediction. The same
    combination applies to v-prediction: v and eps are affine in each other at fixed (x_t, t), with weights
    summing to one. `labels=None` (an unconditional request) is the null class at any w.
    """

    def __init__(
        self, net: Callable[..., Tensor], labels: Tensor | None, guidance: float = 1.0, null_label: int = -1
    ):
        self.net = net  # net(x_t [B, ...], t [B], y [B] long | None) -> [B, ...]; y=None: the null class
        self.labels = labels  # the requested class of each image [B], or None for unconditional samples
        self.guidance = float(guidance)  # w
        self.null_label = int(null_label)  # the index the net reads as "no class" (UNet: its num_classes)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.labels is None or self.guidance == 0.0:
            return self.net(x, t, None)
        if self.guidance == 1.0:
            return self.net(x, t, self.labels)
        b = x.shape[0]
        null = torch.full_like(self.labels, self.null_label)
        both = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, null]))  # (2B, ...)
        cond, uncond = both[:b], both[b:]
        return uncond + self.guidance * (cond - uncond)


class Sampler(ABC):
    """Shared part of the samplers: the timestep grid and the sampling loop; subclasses define `step`."""

    default_num_inference_steps: int | None = None  # None: all T steps

    def __init__(
        self,
        schedule: NoiseSchedule,  # the forward process the network was trained with
        prediction_type: str = "epsilon",  # what the network outputs: "epsilon" (the noise) or "v"
        num_inference_steps: int | None = None,  # reverse steps; None: the sampler's default
        clip_sample: bool = True,  # clamp the predicted x_0 to [-1, 1], the data range, at every step
    ):
        check_prediction_type(prediction_type)
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.set_timesteps(num_inference_steps)

    def set_timesteps(self, num_inference_steps: int | None = None) -> None:
        """Pick `num_inference_steps` evenly spaced timesteps, the first one T-1 ("trailing" spacing).

        Starting at T-1 matters: the loop starts from pure noise, which only matches the last noise level.
        """
        T = self.schedule.num_train_timesteps
        n = num_inference_steps if num_inference_steps is not None else self.default_num_inference_steps or T
        if not 1 <= n <= T:
            raise ConfigError(
                f"num_inference_steps={n} is out of range: set model.num_inference_steps between 1 and "
                f"num_train_timesteps={T}"
            )
        self.num_inference_steps = n
        # e.g. T=1000, n=50: 999, 979, ..., 19; n=T: T-1, ..., 0
        self.timesteps = (torch.linspace(T, 0, n + 1, dtype=torch.float64)[:-1].round() - 1).long()

    def previous_timestep(self, t: int) -> int:
        """The timestep the sampler moves to from t; -1 after the last one (clean data)."""
        index = (self.timesteps == t).nonzero()
        if len(index) == 0:
            raise ValueError(f"timestep {t} is not in this sampler's grid; call set_timesteps first")
        i = int(index[0, 0])
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def predict_x0_eps(self, model_output: Tensor, t: int, x_t: Tensor) -> tuple[Tensor, Tensor]:
        """x_0 and eps from the network's output, x_0 clipped to the data range if asked."""
        x0, eps = self.schedule.to_x0_eps(model_output, x_t, t, self.prediction_type)
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
            eps = self.schedule.eps_from_x0(x0, x_t, t)
        return x0, eps

    @abstractmethod
    def step(
        self,
        model_output: Tensor,
        t: int,
        x_t: Tensor,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """x at the previous timestep; `noise` (standard normal, shaped like x_t) replaces the random draw."""

    @torch.no_grad()
    def sample(
        self,
        net: NoisePredictor,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        x_T: Tensor | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Run the reverse process from pure noise of `shape` [B, C, H, W]; returns x_0 in the data range.

        `x_T` is that starting noise when given (else drawn from `generator`); `callback(i)` is called after
        each step i (a progress bar).
        """
        x = randn(shape, generator, device) if x_T is None else x_T.to(device)
        for i, t in enumerate(self.timesteps.tolist()):
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
            x = self.step(net(x, t_batch), t, x, generator=generator)
            if callback is not None:
                callback(i)
        return x

    def _noise(self, x_t: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
        return noise if noise is not None else randn(tuple(x_t.shape), generator, x_t.device)


class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al. 2020): x_{t-1} ~ q(x_{t-1} | x_t, x_0 = predicted x_0).

    With all T steps this is DDPM exactly; with fewer, the skipped steps are merged into one Gaussian step of
    the same process (beta_eff = 1 - alpha_bar_t / alpha_bar_prev), as in diffusers.
    """

    def posterior(self, x0: Tensor, x_t: Tensor, t: int) -> tuple[Tensor, float]:
        """Mean and variance of q(x_prev | x_t, x_0) between timestep t and the previous one on the grid."""
        prev = self.previous_timestep(t)
        ab_t, ab_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(prev)
        beta = 1 - ab_t / ab_prev
        coef_x0 = math.sqrt(ab_prev) * beta / (1 - ab_t)
        coef_xt = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t)
        variance = (
            (1 - ab_prev) / (1 - ab_t) * beta
        )  # "fixed small": zero at the last step, where ab_prev = 1
        return coef_x0 * x0 + coef_xt * x_t, variance

    def step(self, model_output, t, x_t, generator=None, noise=None):
        x0, _ = self.predict_x0_eps(model_output, t, x_t)
        mean, variance = self.posterior(x0, x_t, t)
        if variance == 0:
            return mean
        return mean + math.sqrt(variance) * self._noise(x_t, generator, noise)


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021): a non-Markovian reverse process with the same marginals, any number of steps.

    eta = 0 is deterministic (an ODE-like map from noise to images); eta = 1 with all T steps is DDPM.
    """

    default_num_inference_steps = 50

    def __init__(
        self,
        schedule: NoiseSchedule,  # the forward process the network was trained with
        prediction_type: str = "epsilon",  # what the network outputs: "epsilon" (the noise) or "v"
        num_inference_steps: int | None = None,  # reverse steps; None: 50
        clip_sample: bool = True,  # clamp the predicted x_0 to [-1, 1], the data range, at every step
        eta: float = 0.0,  # share of the DDPM posterior noise put back per step: 0 deterministic, 1 DDPM
    ):
        if eta < 0:
            raise ConfigError(f"eta={eta} is negative: set model.eta to 0 (deterministic DDIM) or more")
        self.eta = eta
        super().__init__(schedule, prediction_type, num_inference_steps, clip_sample)

    def step(self, model_output, t, x_t, generator=None, noise=None):
        x0, eps = self.predict_x0_eps(model_output, t, x_t)
        ab_t, ab_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(self.previous_timestep(t))
        # sigma_t of DDIM eq. 16: eta times the std of the DDPM posterior between these two steps
        sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps
        if sigma == 0:
            return x_prev
        return x_prev + sigma * self._noise(x_t, generator, noise)


SAMPLERS = {"ddpm": DDPMSampler, "ddim": DDIMSampler}


def build_sampler(
    name: str,
    schedule: NoiseSchedule,
    prediction_type: str = "epsilon",
    num_inference_steps: int | None = None,
    clip_sample: bool = True,
    eta: float = 0.0,
) -> Sampler:
    """The sampler called `name` ("ddpm" or "ddim"); `eta` only applies to DDIM."""
    if name not in SAMPLERS:
        raise ConfigError(f"sampler={name!r} is unknown: set model.sampler to one of {', '.join(SAMPLERS)}")
    if name == "ddim":
        return DDIMSampler(schedule, prediction_type, num_inference_steps, clip_sample, eta)
    return DDPMSampler(schedule, prediction_type, num_inference_steps, clip_sample)
