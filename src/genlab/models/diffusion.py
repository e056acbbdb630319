"""Denoising diffusion (DDPM training, DDPM/DDIM sampling) around any noise-prediction network `net(x_t, t)`.

Training regresses the network's output on the noise (or v) at a uniformly drawn timestep; an exponential
moving average of the network's weights is what validation, testing and `sample()` use. With `num_classes` set
the network also reads the class, replaced by the null class with probability `p_uncond` during training, so
one network gives both predictions classifier-free guidance combines at sampling time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.diffusion.samplers import ClassifierFreeGuidance, Sampler, build_sampler, randn
from genlab.diffusion.schedules import NoiseSchedule, check_prediction_type
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModule, OptimizerFactory, SchedulerFactory, sample_labels
from genlab.models.ema import averaged_copy

# Validation and test losses draw their timesteps and noise from generators seeded with these (plus the
# batch index), so the numbers move only when the weights do and epochs can be compared.
VAL_SEED = 1_000_003
TEST_SEED = 2_000_003


class Diffusion(GenerativeModule):
    """DDPM training loop with EMA weights; implements the `ImageGenerator` protocol."""

    def __init__(
        self,
        net: nn.Module,  # net(x_t [B, C, H, W], t [B] long[, y [B] long]) -> [B, C, H, W], with .image_shape
        num_train_timesteps: int = 1000,  # T: noise levels of the forward process
        beta_schedule: str = "linear",  # "linear" (DDPM) or "cosine" (improved DDPM)
        prediction_type: str = "epsilon",  # training target: "epsilon" (the noise) or "v" (velocity)
        sampler: str = "ddim",  # how sample() runs the reverse process: "ddpm" (ancestral) or "ddim"
        num_inference_steps: int | None = None,  # reverse steps for sample(); None: T for ddpm, 50 for ddim
        eta: float = 0.0,  # DDIM noise: 0 deterministic, 1 DDPM-like (ignored by ddpm)
        clip_sample: bool = True,  # clamp predicted x_0 to [-1, 1] at each sampling step
        ema_decay: float | None = 0.999,  # final EMA decay of the weights evaluated and sampled; None: no EMA
        num_classes: int | None = None,  # class-conditional: the net's num_classes (${runtime.num_classes})
        p_uncond: float = 0.1,  # conditional only: share of training labels replaced by the null class
        guidance_scale: float = 1.0,  # conditional only: sample()'s default w (0 unconditional, 1 conditional)
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ):
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        check_prediction_type(prediction_type)
        if not hasattr(net, "image_shape"):
            raise ConfigError(
                f"{type(net).__name__} has no image_shape: the diffusion model.net must define it"
            )
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(
                f"model.ema_decay={ema_decay} must be in (0, 1), or null to sample the raw weights"
            )
        net_classes = getattr(net, "num_classes", None)
        if num_classes != net_classes:
            raise ConfigError(
                f"model.num_classes={num_classes} but the net has num_classes={net_classes}: "
                "set model.net.num_classes: ${model.num_classes}"
            )
        if not 0.0 <= p_uncond <= 1.0:
            raise ConfigError(f"model.p_uncond={p_uncond} must be in [0, 1] (the share of labels dropped)")
        if guidance_scale < 0:
            raise ConfigError(f"model.guidance_scale={guidance_scale} must be 0 (unconditional) or more")
        self.net = net
        self.num_classes = num_classes
        self.p_uncond = float(p_uncond)
        self.guidance_scale = float(guidance_scale)
        self.image_shape = tuple(net.image_shape)
        self.schedule = NoiseSchedule(num_train_timesteps, beta_schedule)
        self.prediction_type = prediction_type
        self.sampler = self.make_sampler(sampler, num_inference_steps, eta, clip_sample)
        # torch's AveragedModel (the machinery of Lightning's EMAWeightAveraging) kept inside the module:
        # sample() then always sees the EMA weights, which are in state_dict (ema.module.*, ema.n_averaged).
        self.ema = None
        if ema_decay is not None:
            self.ema = averaged_copy(net, ema_decay)

    def make_sampler(
        self, name: str, num_inference_steps: int | None = None, eta: float = 0.0, clip_sample: bool = True
    ) -> Sampler:
        """A sampler for this model's schedule and prediction type (e.g. to compare DDPM and DDIM)."""
        return build_sampler(name, self.schedule, self.prediction_type, num_inference_steps, clip_sample, eta)

    @property
    def has_ema(self) -> bool:
        return self.ema is not None

    @property
    def sampling_net(self) -> nn.Module:
        """The weights that are evaluated and sampled: the EMA copy if there is one (unless `use_ema` is off)."""
        return self.ema.module if self.ema is not None and self.use_ema else self.net

    def loss(self, net: nn.Module, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        """MSE between the network's output at (x_t, t[, class y]) and the target (noise or v)."""
        x_t = self.schedule.add_noise(x0, noise, t)
        target = self.schedule.target(x0, noise, t, self.prediction_type)
        out = net(x_t, t) if self.num_classes is None else net(x_t, t, y)
        return F.mse_loss(out, target)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x0 = batch[0]
        t = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        y = None
        if self.num_classes is not None:
            # label dropout: the null class (index num_classes) teaches the same net the unconditional model
            drop = torch.rand(x0.shape[0], device=x0.device) < self.p_uncond
            y = batch[1].masked_fill(drop, self.num_classes)
        loss = self.loss(self.net, x0, t, noise, y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def update_ema(self) -> None:
        """Move the EMA weights towards the current ones (the first update copies them)."""
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # right after each optimiser step (not once per batch under gradient accumulation), and before any
        # callback's on_train_batch_end: a checkpoint saved there already holds this step's EMA
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def _fixed_noise_loss(self, batch, seed: int) -> Tensor:
        x0 = batch[0]
        # drawn on the CPU so the value does not depend on the accelerator
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],), generator=g).to(x0.device)
        noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        # conditional models are scored on the true labels (the prediction guidance starts from)
        y = batch[1] if self.num_classes is not None else None
        return self.loss(self.sampling_net, x0, t, noise, y)

    def validation_step(self, batch, batch_idx: int) -> None:
        loss = self._fixed_noise_loss(batch, VAL_SEED + batch_idx)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss = self._fixed_noise_loss(batch, TEST_SEED + batch_idx)
        self.log("test/loss", loss, sync_dist=True)

    def configure_optimizers(self):
        return self.build_optimizer(self.net.parameters())

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> Tensor:
        """`n` images [n, C, H, W] in [0, 1] from the configured sampler, with the EMA weights.

        Conditional models draw class `labels` (an int, or one per image; None: uniform from `generator`)
        with guidance scale `guidance` (None: model.guidance_scale). `callback(i)` is called after each
        reverse step i (progress bars).
        """
        return self.sample_from_latents(
            self.draw_latents(n, generator), generator, labels, guidance, callback
        )

    def draw_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The pure noise x_T [n, C, H, W] the reverse process starts from, on this module's device."""
        return randn((n, *self.image_shape), generator, self.device)

    @torch.no_grad()
    def sample_from_latents(
        self,
        latents: Tensor,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Images [n, C, H, W] in [0, 1] denoised from x_T = `latents`; `generator` draws the noise of the
        steps of a stochastic sampler (DDPM, DDIM with eta > 0), so only DDIM with eta = 0 is deterministic.
        `labels`/`guidance` as in `sample()` (labels left out are drawn from `generator` first)."""
        y = sample_labels(self, len(latents), labels, generator, guidance)
        net = self.sampling_net
        predictor = net
        if self.num_classes is not None:
            w = self.guidance_scale if guidance is None else float(guidance)
            predictor = ClassifierFreeGuidance(net, y, w, null_label=self.num_classes)
        was_training = net.training
        net.eval()
        x = self.sampler.sample(
            predictor,
            tuple(latents.shape),
            generator=generator,
            device=self.device,
            x_T=latents,
            callback=callback,
        )
        net.train(was_training)
        return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).float()
