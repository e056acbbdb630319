"""GAN training: the non-saturating, hinge and WGAN-GP games between a generator and a discriminator.

Lightning manual optimisation (separate optimisers and learning rates, `n_critic` discriminator steps per
generator step) and an exponential moving average of the generator, which is what `sample()` uses. With
`num_classes` set the game is class-conditional (conditional generator, projection discriminator): fakes are
drawn for the labels of the real batch, so they follow the data's class distribution, and any of the losses
works unchanged on the class-aware scores.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModule, OptimizerFactory, SchedulerFactory, sample_labels
from genlab.models.ema import averaged_copy
from genlab.models.gan_losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mmd2,
)

log = logging.getLogger(__name__)


def _check_arguments(
    generator: nn.Module,
    discriminator: nn.Module,
    latent_dim: int,
    loss: str,
    n_critic: int,
    ema_decay: float | None,
    num_classes: int | None,
    mode_seeking: float = 0.0,
) -> None:
    """One line for a GAN whose settings or nets do not fit together."""
    if loss not in LOSSES:
        raise ConfigError(f"model.loss must be one of {list(LOSSES)}, got {loss!r}")
    if float(mode_seeking) < 0:
        raise ConfigError(f"model.mode_seeking must be >= 0 (0: off), got {mode_seeking}")
    if int(n_critic) < 1:
        raise ConfigError(
            f"model.n_critic must be >= 1 (discriminator steps per generator step), got {n_critic}"
        )
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ConfigError(f"model.ema_decay must be in [0, 1) or null (no EMA), got {ema_decay}")
    g_latent = getattr(generator, "latent_dim", latent_dim)
    if g_latent != latent_dim:
        raise ConfigError(
            f"model.latent_dim={latent_dim} but the generator takes latent_dim={g_latent}: "
            "set model.generator.latent_dim: ${model.latent_dim}"
        )
    for role, net in (("generator", generator), ("discriminator", discriminator)):
        if getattr(net, "num_classes", None) != num_classes:
            raise ConfigError(
                f"model.num_classes={num_classes} but the {role} has num_classes="
                f"{getattr(net, 'num_classes', None)}: set model.{role}.num_classes: ${{model.num_classes}}"
            )
    if loss == "wgan_gp" and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()
    ):
        raise ConfigError(
            "model.loss=wgan_gp penalises per-sample gradients, which batch norm mixes across the batch: "
            "set model.discriminator.norm=layer (or instance / none)"
        )


class GAN(GenerativeModule):
    """A generator G(z) and a discriminator D(x) trained in turns with manual optimisation.

    Every training batch is one discriminator step; every `n_critic`-th batch is followed by one generator
    step on fresh noise. Lightning's `trainer.global_step` counts optimiser steps of both networks, so
    `trainer.max_steps` is (1 + 1 / n_critic) times the number of batches; prefer `max_epochs` as a budget.

    Validation logs `val/loss`: the MMD between held-out real images and as many EMA-generator samples (fixed
    noise, so epochs compare). It is a distance between the two distributions that does not depend on the
    discriminator (whose loss rewards whichever network is winning, so it cannot pick a checkpoint); in pixel
    space it sees class balance, missing modes and stroke statistics more than fine shape. Also logged, for
    diagnosis: `val/d_loss`, `val/g_loss`, `val/d_acc` (D's accuracy on real vs fake, 0.5 when fooled).
    """

    net_names = ("generator", "discriminator")

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        latent_dim: int = 64,
        loss: str = "non_saturating",
        gp_weight: float = 10.0,
        n_critic: int = 1,
        lr_g: float | None = None,
        lr_d: float | None = None,
        ema_decay: float | None = 0.999,
        grad_clip: float | None = None,
        collapse_patience: int = 200,
        num_classes: int | None = None,
        mode_seeking: float = 0.0,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ):
        """
        Args:
            generator: z (B, latent_dim) -> images (B, C, H, W) in [-1, 1], e.g. `nets.dcgan.Generator`.
            discriminator: images (B, C, H, W) -> scores (B,), e.g. `nets.dcgan.Discriminator`.
            latent_dim: size of z; must match the generator's.
            loss: "non_saturating", "hinge" or "wgan_gp".
            gp_weight: weight of the gradient penalty (wgan_gp only; 10 in the paper).
            n_critic: discriminator steps per generator step (5 in the WGAN-GP paper, 1 for DCGAN).
            lr_g: generator learning rate; None keeps the optimizer config's lr.
            lr_d: discriminator learning rate; None keeps the optimizer config's lr.
            ema_decay: decay of the generator's moving average that `sample()` uses; None samples the raw one.
            grad_clip: max gradient norm for both networks (Lightning's gradient_clip_val cannot be used with
                manual optimisation); None does not clip.
            collapse_patience: warn when a loss has sat at ~0 for this many steps (non_saturating / hinge).
            num_classes: class-conditional with this many classes (`${runtime.num_classes}`; both networks
                must have the same); None: unconditional.
            mode_seeking: weight of the mode-seeking term (Mao et al. 2019, MSGAN): each generator step draws
                two noise vectors per label and adds `mode_seeking / (mean|G(z1)-G(z2)| / mean|z1-z2| + 1e-5)`
                to the generator's loss, so images that ignore z cost more; 0 (default) leaves it out.
            optimizer: partial optimiser from conf/optimizer, built once per network.
            scheduler: partial scheduler from conf/scheduler, one per optimiser, stepped with it.
        """
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        self.save_hyperparameters(ignore=["generator", "discriminator", "optimizer", "scheduler"])
        self.automatic_optimization = False
        _check_arguments(
            generator, discriminator, latent_dim, loss, n_critic, ema_decay, num_classes, mode_seeking
        )
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.num_classes = num_classes
        self.loss = loss
        self.gp_weight = float(gp_weight)
        self.n_critic = int(n_critic)
        self.lr_g, self.lr_d = lr_g, lr_d
        self.grad_clip = grad_clip
        self.collapse_patience = int(collapse_patience)
        self.mode_seeking = float(mode_seeking)
        # the EMA copy is a submodule, so it is in state_dict and every checkpoint; buffers (BatchNorm running
        # statistics) are averaged too, so the copy runs in eval mode without the raw generator's statistics
        self.generator_ema: AveragedModel | None = None
        if ema_decay is not None:
            self.generator_ema = averaged_copy(generator, ema_decay)
        # discriminator steps so far: decides when G steps (kept in checkpoints by on_save_checkpoint)
        self._d_steps = 0
        self._collapsed = {"d_loss": 0, "g_loss": 0}  # consecutive steps each loss has sat at ~0

    # ---- sampling ---------------------------------------------------------------------------------------

    @property
    def has_ema(self) -> bool:
        return self.generator_ema is not None

    @property
    def sampling_generator(self) -> nn.Module:
        """The network `sample()` runs: the EMA copy when there is one (unless `use_ema` is off), else the
        trained generator."""
        if self.generator_ema is not None and self.use_ema:
            return self.generator_ema.module
        return self.generator

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """`n` images (n, C, H, W) in [0, 1] from the EMA generator; `generator` seeds the noise (and, for a
        conditional model asked for no `labels`, the classes, drawn uniformly after the noise)."""
        return self.sample_from_latents(self.draw_latents(n, generator), generator, labels, guidance)

    def draw_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I) of shape (n, latent_dim), on this module's device."""
        # draw z where the torch.Generator lives, so a CPU generator gives the same z on any device
        noise_device = generator.device if generator is not None else self.device
        return torch.randn(n, self.latent_dim, generator=generator, device=noise_device).to(self.device)

    @torch.no_grad()
    def sample_from_latents(
        self,
        latents: Tensor,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """Images (n, C, H, W) in [0, 1] generated from z (n, latent_dim) [of classes `labels`]; deterministic
        given the labels."""
        y = sample_labels(self, len(latents), labels, generator, guidance, guided=False)
        net = self.sampling_generator
        was_training = net.training
        net.eval()  # BatchNorm uses its (averaged) running statistics, so a sample does not depend on n
        images = self._generate(net, latents.to(self.device), y)
        net.train(was_training)
        return ((images + 1.0) / 2.0).clamp(0.0, 1.0)

    # ---- training ---------------------------------------------------------------------------------------

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def _generate(self, net: nn.Module, z: Tensor, y: Tensor | None) -> Tensor:
        return net(z) if self.num_classes is None else net(z, y)

    def _score(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.discriminator(x) if self.num_classes is None else self.discriminator(x, y)

    def _labels(self, batch: Any) -> Tensor | None:
        """The real batch's labels for a conditional model (its fakes are drawn for the same classes)."""
        if self.num_classes is None:
            return None
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ConfigError(
                "a conditional GAN (model.num_classes set) needs labelled data: (images, labels)"
            )
        return batch[1]

    def _step(self, optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, C, H, W) in [-1, 1]
        opt_g, opt_d = self.optimizers()
        schedulers = self.lr_schedulers()
        b = real.shape[0]
        y = self._labels(batch)  # (B,) or None

        # discriminator step: real vs fakes from a frozen generator
        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                fake = self._generate(self.generator, self._noise(b), y)
            real_scores = self._score(real, y)  # (B,)
            fake_scores = self._score(fake, y)  # (B,)
            d_loss = discriminator_loss(self.loss, real_scores, fake_scores)
            total = d_loss
            if self.loss == "wgan_gp":
                gp = gradient_penalty(lambda x: self._score(x, y), real, fake)
                total = d_loss + self.gp_weight * gp
                self.log_diagnostics({"train/gp": gp})
            self._step(opt_d, total)
        if schedulers:
            schedulers[1].step()
        self._d_steps += 1
        d_acc = 0.5 * ((real_scores > 0).float().mean() + (fake_scores < 0).float().mean())
        self.log("train/d_loss", d_loss, prog_bar=True)
        self.log_diagnostics({"train/d_acc": d_acc})  # for the loggers only
        self._check("d_loss", d_loss, watch=self.loss in ("non_saturating", "hinge"))

        if self._d_steps % self.n_critic:
            return
        # generator step: fresh noise, gradients flow through the discriminator into G only
        with self.toggled_optimizer(opt_g):
            g_loss = self._generator_loss(b, y)
            self._step(opt_g, g_loss)
        if schedulers:
            schedulers[0].step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        self.log("train/g_loss", g_loss, prog_bar=True)
        self._check("g_loss", g_loss, watch=self.loss == "non_saturating")

    def _generator_loss(self, b: int, y: Tensor | None) -> Tensor:
        """The generator's loss on b fresh fakes for the batch's labels; with `mode_seeking`, on 2b (two noise
        vectors for each label) plus the mode-seeking term: the inverse of how far the images of one label move
        per unit of noise."""
        if not self.mode_seeking:
            return generator_loss(
                self.loss, self._score(self._generate(self.generator, self._noise(b), y), y)
            )
        z = self._noise(2 * b)
        y2 = None if y is None else torch.cat([y, y])
        fake = self._generate(self.generator, z, y2)
        adversarial = generator_loss(self.loss, self._score(fake, y2))
        ratio = (fake[:b] - fake[b:]).abs().mean() / (z[:b] - z[b:]).abs().mean()
        self.log_diagnostics({"train/ms_ratio": ratio.detach()})
        return adversarial + self.mode_seeking / (ratio + 1e-5)

    def _check(self, name: str, value: Tensor, watch: bool, tol: float = 1e-2) -> None:
        """Stop on a non-finite loss; warn (once per episode) when a bounded loss has sat at ~0 for long."""
        v = float(value.detach())
        if not math.isfinite(v):
            raise FloatingPointError(
                f"non-finite loss at step {self.global_step} (train/{name} is {v}: the GAN diverged); "
                "checkpoints written before it are kept; lower the learning rates (optimizer.lr, model.lr_g, "
                "model.lr_d) or set model.grad_clip"
            )
        if not watch:
            return
        self._collapsed[name] = self._collapsed[name] + 1 if v < tol else 0
        if self._collapsed[name] == self.collapse_patience and self.trainer.is_global_zero:
            what = (
                "the discriminator tells real from fake perfectly, so the generator's gradient carries little"
                if name == "d_loss"
                else "the discriminator is fooled completely and no longer guides the generator"
            )
            log.warning(
                "GAN collapse: train/%s < %g for %d steps (trainer step %d): %s; rebalance model.lr_g / "
                "model.lr_d, or try model.loss=hinge or wgan_gp",
                name,
                tol,
                self.collapse_patience,
                self.global_step,
                what,
            )

    # ---- validation -------------------------------------------------------------------------------------

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def _evaluate(self, batch: Any, batch_idx: int, stage: str) -> None:
        """`<stage>/loss` (MMD of real vs EMA samples), and D's loss and accuracy on them, G's loss."""
        real = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, C, H, W) in [-1, 1]
        b = real.shape[0]
        # the same noise every epoch (per batch and rank), so val/loss moves only because the model does
        noise = torch.Generator(device=self.device).manual_seed(1_000_003 * self.global_rank + batch_idx)
        z = torch.randn(b, self.latent_dim, generator=noise, device=self.device)
        y = self._labels(batch)
        # (B, C, H, W); Lightning has put every submodule in eval mode
        fake = self._generate(self.sampling_generator, z, y)
        real_scores, fake_scores = self._score(real, y), self._score(fake, y)
        d_acc = 0.5 * ((real_scores > 0).float().mean() + (fake_scores < 0).float().mean())
        metrics = {
            f"{stage}/d_loss": discriminator_loss(self.loss, real_scores, fake_scores),
            f"{stage}/g_loss": generator_loss(self.loss, fake_scores),
            f"{stage}/d_acc": d_acc,
        }
        if b >= 2:  # the unbiased MMD needs two samples a side
            self.log(f"{stage}/loss", mmd2(real, fake), prog_bar=True, batch_size=b, sync_dist=True)
        self.log_dict(metrics, batch_size=b, sync_dist=True)

    # ---- optimisers and checkpoints ---------------------------------------------------------------------

    def _optimizer(self, params, lr: float | None) -> torch.optim.Optimizer:
        # the partial's lr is the default; keyword arguments given here override the partial's
        return self.optimizer_factory(params) if lr is None else self.optimizer_factory(params, lr=lr)

    def _planned_d_steps(self) -> int:
        """Discriminator steps this fit will take (one per batch), for the schedulers' total_steps."""
        batches = (
            self.trainer.estimated_stepping_batches
        )  # min(max_steps, epochs * batches) when both are set
        if not math.isfinite(batches):
            raise ConfigError("a scheduler needs a finite run: set trainer.max_epochs or trainer.max_steps")
        if self.trainer.max_steps > 0:
            # max_steps counts G and D steps together: n_critic D steps come with each G step
            batches = min(batches, math.ceil(self.trainer.max_steps * self.n_critic / (self.n_critic + 1)))
        return max(1, int(batches))

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ConfigError("no optimizer configured: select one with optimizer=adam|adamw|sgd")
        opt_g = self._optimizer(self.generator.parameters(), self.lr_g)
        opt_d = self._optimizer(self.discriminator.parameters(), self.lr_d)
        if self.scheduler_factory is None:
            return [opt_g, opt_d]
        d_steps = self._planned_d_steps()
        sched_g = self.scheduler_factory(opt_g, total_steps=max(1, d_steps // self.n_critic))
        sched_d = self.scheduler_factory(opt_d, total_steps=d_steps)
        # stepped by hand in training_step (manual optimisation); "interval" is for the LR monitor
        return [opt_g, opt_d], [
            {"scheduler": sched_g, "interval": "step"},
            {"scheduler": sched_d, "interval": "step"},
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gan_d_steps"] = self._d_steps  # a resumed run keeps its place in the n_critic cycle

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._d_steps = int(checkpoint.get("gan_d_steps", 0))
