"""The GAN games' losses as pure tensor functions (non-saturating, hinge, WGAN-GP with its gradient penalty),
and the MMD the GAN validates with."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import ConfigError

LOSSES = ("non_saturating", "hinge", "wgan_gp")
# Gaussian kernel widths of the validation MMD, in units of the per-pixel mean squared distance of images in
# [-1, 1] (two different MNIST digits are ~0.5 apart): several widths catch both blur and missing modes
MMD_SCALES = (0.25, 0.5, 1.0, 2.0)


def discriminator_loss(loss: str, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """The discriminator's side of the game, from its scores (logits / critic values) on real and fake images.

    non_saturating: binary cross-entropy, real -> 1 and fake -> 0 (Goodfellow et al. 2014);
    hinge: mean relu(1 - D(real)) + relu(1 + D(fake)) (Lim & Ye 2017, used by SAGAN / BigGAN);
    wgan_gp: the critic's negated Wasserstein estimate E[D(fake)] - E[D(real)]; the penalty is added apart.
    """
    if loss == "non_saturating":
        # softplus(-x) = -log sigmoid(x): the stable form of BCE on logits
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    if loss == "hinge":
        return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()
    if loss == "wgan_gp":
        return fake_scores.mean() - real_scores.mean()
    raise ConfigError(f"model.loss must be one of {list(LOSSES)}, got {loss!r}")


def generator_loss(loss: str, fake_scores: Tensor) -> Tensor:
    """The generator's side: non-saturating -log D(G(z)) for "non_saturating", -D(G(z)) for hinge and WGAN."""
    if loss == "non_saturating":
        # maximise log D(G(z)) rather than minimise log(1 - D(G(z))): strong gradients while D wins early on
        return F.softplus(-fake_scores).mean()
    if loss in ("hinge", "wgan_gp"):
        return -fake_scores.mean()
    raise ConfigError(f"model.loss must be one of {list(LOSSES)}, got {loss!r}")


def gradient_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1) ** 2] on random interpolates.

    x_hat = eps * real + (1 - eps) * fake with one eps ~ U[0, 1] per sample; the graph is kept
    (create_graph) so the penalty trains the discriminator.
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1.0 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    # the 1e-12 keeps the norm differentiable where a gradient is exactly zero
    grad_norm = torch.sqrt(grad.flatten(1).pow(2).sum(dim=1) + 1e-12)  # (B,)
    return (grad_norm - 1.0).pow(2).mean()


def mmd2(x: Tensor, y: Tensor, scales: tuple[float, ...] = MMD_SCALES) -> Tensor:
    """Unbiased squared maximum mean discrepancy between two image batches (Gretton et al. 2012).

    Kernel: a sum of Gaussians exp(-d / s) of the per-pixel mean squared distance d, one per scale s.
    Near 0 (and slightly negative at times, being unbiased) when x and y come from the same distribution.
    """
    x, y = x.flatten(1), y.flatten(1)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd2 needs at least 2 samples on each side, got {n} and {m}")
    xy = torch.cat([x, y])
    dist = torch.cdist(xy, xy).pow(2) / x.shape[1]  # (n + m, n + m)
    k = sum(torch.exp(-dist / s) for s in scales)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    # drop the diagonals (a sample against itself) so the estimate is unbiased
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2.0 * kxy.mean()
    )
