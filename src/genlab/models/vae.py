"""The VAE family: trains an encoder/decoder net on the (beta-weighted) ELBO; samples, reconstructs, interpolates.

Images arrive in [-1, 1] and are modelled in [0, 1]; all losses are per image in nats (summed over pixels and
latent dimensions, averaged over the batch), so they compare across batch sizes. With `num_classes` set it is
a conditional VAE: encoder and decoder read the label, and samples are drawn for requested classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModule, OptimizerFactory, SchedulerFactory, sample_labels

RECON_LOSSES = ("bce", "mse")


# seeds of the posterior noise in val/test losses (distinct, so val and test never share a draw)
VAL_SEED = 1_000_003
TEST_SEED = 2_000_003


class VAE(GenerativeModule):
    """Variational autoencoder with a Gaussian posterior and a standard normal prior.

    The net must provide `encode(x) -> (mu, logvar)`, `decode(z) -> output` and the attributes
    `latent_dim` and `image_shape` (see `genlab.nets.conv_vae.ConvVAE`).
    """

    metric_modes = {"val/elbo": "max", "test/elbo": "max"}

    def __init__(
        self,
        net: nn.Module,
        beta: float = 1.0,
        recon_loss: str = "bce",
        num_classes: int | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ):
        """
        Args:
            net: the encoder/decoder network.
            beta: weight of the KL term in the training loss; 1 trains on the ELBO itself (beta-VAE otherwise).
            recon_loss: 'bce' (Bernoulli decoder: the net outputs logits of pixel intensities in [0, 1]) or
                'mse' (Gaussian decoder with unit variance: the net outputs the mean in [0, 1]).
            num_classes: a conditional VAE with this many classes (`${runtime.num_classes}`, the net's own);
                None: unconditional.
            optimizer, scheduler: `_partial_` factories from conf/optimizer and conf/scheduler.
        """
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        if recon_loss not in RECON_LOSSES:
            raise ConfigError(f"model.recon_loss={recon_loss!r} is not one of {list(RECON_LOSSES)}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if getattr(net, "num_classes", None) != num_classes:
            raise ConfigError(
                f"model.num_classes={num_classes} but the net has num_classes={getattr(net, 'num_classes', None)}: "
                "set model.net.num_classes: ${model.num_classes}"
            )
        self.net = net
        self.num_classes = num_classes
        self.beta = beta
        self.recon_loss = recon_loss

    # --- the model ------------------------------------------------------------------------------------------

    def _mean(self, out: Tensor) -> Tensor:
        """Decoder output -> expected image in [0, 1]."""
        return torch.sigmoid(out) if self.recon_loss == "bce" else out.clamp(0.0, 1.0)

    def _nll(self, out: Tensor, target: Tensor) -> Tensor:
        """-log p(x|z) per image in nats, shape (B,), for `target` in [0, 1]."""
        if self.recon_loss == "bce":
            nll = F.binary_cross_entropy_with_logits(out, target, reduction="none")
        else:
            nll = 0.5 * (out - target) ** 2 + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(dim=1)

    @staticmethod
    def _kl(mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(mu, exp(logvar)) || N(0, I)) per image in nats, shape (B,), in closed form."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str, noise_seed: int | None = None) -> Tensor:
        x, labels = batch
        y = None if self.num_classes is None else labels
        target = (x + 1.0) / 2.0  # [-1, 1] -> [0, 1]
        mu, logvar = self._encode(x, y)
        # val/test draw their noise from a fixed seed: the same weights always score the same, and
        # evaluating does not move the global RNG that training (and a resumed run) depends on
        if noise_seed is None:
            eps = torch.randn_like(mu)
        else:
            eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(noise_seed)).to(mu)
        # reparameterisation trick: z is a differentiable function of (mu, logvar), so gradients reach the encoder
        z = mu + eps * torch.exp(0.5 * logvar)
        recon = self._nll(self._decode(z, y), target).mean()
        kl = self._kl(mu, logvar).mean()
        loss = recon + self.beta * kl  # equals -ELBO when beta == 1
        # train logs every step; val/test log the epoch mean (weighted by batch size, over all DDP ranks)
        on_step = stage == "train"
        kwargs = dict(on_step=on_step, on_epoch=not on_step, batch_size=x.shape[0], sync_dist=not on_step)
        self.log(f"{stage}/loss", loss, prog_bar=True, **kwargs)
        metrics = {f"{stage}/recon": recon, f"{stage}/kl": kl}
        if on_step:  # for the loggers only: logged on the steps whose row they write
            self.log_diagnostics(metrics)
            return loss
        metrics[f"{stage}/elbo"] = -(recon + kl)
        self.log_dict(metrics, **kwargs)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val", noise_seed=VAL_SEED + batch_idx)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test", noise_seed=TEST_SEED + batch_idx)

    # --- the ImageGenerator protocol and friends ------------------------------------------------------------

    def _encode(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.net.encode(x) if self.num_classes is None else self.net.encode(x, y)

    def _decode(self, z: Tensor, y: Tensor | None) -> Tensor:
        return self.net.decode(z) if self.num_classes is None else self.net.decode(z, y)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """`n` images (n, C, H, W) in [0, 1]: decoder means at z ~ N(0, I) drawn from `generator` [for the
        classes `labels`; a conditional model asked for none draws them uniformly, after z]."""
        return self.sample_from_latents(self.draw_latents(n, generator), generator, labels, guidance)

    def draw_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I) of shape (n, latent_dim), on this module's device."""
        # draw on the generator's own device so a CPU generator gives the same latents on any accelerator
        device = generator.device if generator is not None else self.device
        return torch.randn(n, self.net.latent_dim, generator=generator, device=device).to(self.device)

    @torch.no_grad()
    def sample_from_latents(
        self,
        latents: Tensor,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """Decoder means (n, C, H, W) in [0, 1] at the codes `latents` (n, latent_dim); deterministic given
        the labels."""
        y = sample_labels(self, len(latents), labels, generator, guidance, guided=False)
        return self._decode_mean(latents.to(self.device), y)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images `x` in [-1, 1] (B, C, H, W) [of classes `labels`, which a conditional VAE needs] -> decoded
        posterior means in [0, 1]; deterministic."""
        if self.num_classes is not None and labels is None:
            raise ConfigError(
                f"{type(self).__name__} is conditional: reconstruct(x, labels) needs the labels"
            )
        y = None if labels is None else sample_labels(self, len(x), labels)
        return self._decode_mean(self._encode_mean(x, y), y)

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tensor:
        """Decode `steps` points on the line between the posterior means of `x_a` and `x_b` (in [-1, 1]).

        Single images (C, H, W) give (steps, C, H, W); batches (B, C, H, W) give (B, steps, C, H, W),
        one row per pair. The endpoints equal `reconstruct(x_a)` and `reconstruct(x_b)`; values in [0, 1].
        """
        if self.num_classes is not None:
            raise ConfigError(
                "interpolating between real images needs their classes, which a conditional VAE's codes depend "
                "on: use source=noise"
            )
        single = x_a.dim() == 3
        if single:
            x_a, x_b = x_a.unsqueeze(0), x_b.unsqueeze(0)
        z_a, z_b = self._encode_mean(x_a), self._encode_mean(x_b)  # (B, latent_dim)
        t = torch.linspace(0.0, 1.0, steps, device=self.device).view(1, steps, 1)
        z = torch.lerp(z_a.unsqueeze(1), z_b.unsqueeze(1), t)  # (B, steps, latent_dim)
        images = self._decode_mean(z.flatten(0, 1))  # (B * steps, C, H, W)
        images = images.view(x_a.shape[0], steps, *images.shape[1:])
        return images[0] if single else images

    def _encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        with _eval_mode(self.net):
            mu, _ = self._encode(x.to(self.device), y)
        return mu

    def _decode_mean(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        with _eval_mode(self.net):
            return self._mean(self._decode(z, y))


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then the previous mode back (matters for nets with dropout or norms)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
