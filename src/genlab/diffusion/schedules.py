"""Noise schedules and the forward process q(x_t | x_0): betas -> alphas_cumprod, noising, prediction targets.

Notation (Ho et al. 2020): alpha_bar_t = prod_{s<=t} (1 - beta_s);
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, and the velocity (Salimans & Ho 2022)
v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0. Timesteps are integers 0..T-1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v")


def linear_betas(num_train_timesteps: int) -> Tensor:
    """DDPM's linear betas (1e-4 to 0.02 at T=1000), rescaled so any T spans the same total noise."""
    scale = 1000 / num_train_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_train_timesteps, dtype=torch.float64)


def cosine_betas(num_train_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved-DDPM cosine schedule: alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas <= `max_beta`.

    The cap keeps the last step from being a pure-noise singularity (beta = 1 would make alpha_bar exactly 0).
    """
    steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


BETA_SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"prediction_type={prediction_type!r} is unknown: set model.prediction_type to one of "
            f"{', '.join(PREDICTION_TYPES)}"
        )


class NoiseSchedule:
    """The forward process of a discrete-time diffusion: alphas_cumprod, and maps between x_0, eps, v and x_t.

    Tables are float64 on the CPU; values are gathered per timestep and cast to the tensor they multiply,
    so one schedule serves any device and dtype.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,  # T: number of noise levels the network is trained on
        beta_schedule: str = "linear",  # how beta_t grows with t: "linear" (DDPM) or "cosine" (improved DDPM)
    ):
        if beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(
                f"beta_schedule={beta_schedule!r} is unknown: set model.beta_schedule to one of "
                f"{', '.join(BETA_SCHEDULES)}"
            )
        if num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps={num_train_timesteps} is too small: set it to 2 or more")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.betas = BETA_SCHEDULES[beta_schedule](num_train_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t as a Python float; t = -1 means 'before the first step', where there is no noise."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def _at(self, table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """table[t] for a batch of timesteps t [B], shaped to broadcast against `like` [B, ...]."""
        values = table[t.cpu()].to(device=like.device, dtype=like.dtype)
        return values.view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Sample of q(x_t | x_0) given the noise: sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise."""
        sqrt_ab = self._at(self.alphas_cumprod.sqrt(), t, x0)
        sqrt_one_minus_ab = self._at((1 - self.alphas_cumprod).sqrt(), t, x0)
        return sqrt_ab * x0 + sqrt_one_minus_ab * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
        sqrt_ab = self._at(self.alphas_cumprod.sqrt(), t, x0)
        sqrt_one_minus_ab = self._at((1 - self.alphas_cumprod).sqrt(), t, x0)
        return sqrt_ab * noise - sqrt_one_minus_ab * x0

    def target(self, x0: Tensor, noise: Tensor, t: Tensor, prediction_type: str) -> Tensor:
        """What the network is trained to output at (x_t, t): the noise itself, or v."""
        check_prediction_type(prediction_type)
        return noise if prediction_type == "epsilon" else self.velocity(x0, noise, t)

    def to_x0_eps(
        self, model_output: Tensor, x_t: Tensor, t: Tensor | int, prediction_type: str
    ) -> tuple[Tensor, Tensor]:
        """(x_0, eps) implied by the network's output at (x_t, t); `t` is a batch [B] or one int for all."""
        check_prediction_type(prediction_type)
        if isinstance(t, int):
            t = torch.full((x_t.shape[0],), t, dtype=torch.long)
        sqrt_ab = self._at(self.alphas_cumprod.sqrt(), t, x_t)
        sqrt_one_minus_ab = self._at((1 - self.alphas_cumprod).sqrt(), t, x_t)
        if prediction_type == "epsilon":
            eps = model_output
            x0 = (x_t - sqrt_one_minus_ab * eps) / sqrt_ab
        else:  # v: (x_t, v) is a rotation of (x_0, eps) by the angle whose cos is sqrt(alpha_bar)
            x0 = sqrt_ab * x_t - sqrt_one_minus_ab * model_output
            eps = sqrt_one_minus_ab * x_t + sqrt_ab * model_output
        return x0, eps

    def eps_from_x0(self, x0: Tensor, x_t: Tensor, t: int) -> Tensor:
        """The noise that takes x_0 to x_t at step t (after clipping x_0, to keep the pair consistent)."""
        ab = self.alpha_bar(t)
        return (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
