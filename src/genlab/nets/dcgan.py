"""DCGAN networks: a generator z -> image in [-1, 1] and a discriminator image -> one logit.

With `num_classes` set both are class-conditional: the generator reads a learnt label embedding beside z, and
the discriminator is a projection discriminator (Miyato & Koyama 2018): its logit gains <embed(y), phi(x)>,
the inner product of a class embedding with the image's features. Unconditional nets have no extra weights.

Plain torch, no training logic: the losses, the EMA copy and sampling live in `genlab.models.gan`.
Both networks are sized from `image_shape`: the generator starts from a small square seed (7x7 for 28x28,
4x4 for 32x32, 2x2 for 8x8) and doubles it with 4x4 stride-2 transposed convolutions; the discriminator mirrors it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nets import check_sizes

# discriminator normalisations; WGAN-GP needs one that does not mix samples of a batch (not "batch")
NORMS = ("batch", "layer", "instance", "none")


def seed_and_stages(image_shape: Sequence[int], key: str) -> tuple[int, int]:
    """(seed size, number of x2 stages) with seed * 2 ** stages == H == W and seed <= 7.

    Halving goes on while the size is even and above 7, and at least twice when it can (so small images
    still get two stages): 28 -> (7, 2), 32 -> (4, 3), 8 -> (2, 2), 64 -> (4, 4).
    `key` names the config entry in error messages.
    """
    if len(image_shape) != 3:
        raise ConfigError(f"{key} must be [C, H, W], got {list(image_shape)}: check data.image_shape")
    _, height, width = image_shape
    if height != width:
        raise ConfigError(
            f"DCGAN needs square images, {key} is {height}x{width}: resize them (data.image_shape)"
        )
    seed, stages = height, 0
    while seed % 2 == 0 and (seed > 7 or (stages < 2 and seed > 2)):
        seed, stages = seed // 2, stages + 1
    if seed > 7 or stages == 0:
        raise ConfigError(
            f"DCGAN cannot take {height}x{width} images ({key}): the size must be 2, 3, ... or 7 times a "
            "power of two and at least 4 (e.g. 8, 28, 32, 64); resize them (data.image_shape)"
        )
    return seed, stages


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (B, latent_dim) -> linear to a (ch, s, s) seed -> `stages` x2 transposed convs -> 3x3 conv -> tanh.

    Channels halve at each stage, from base_channels * 2 ** stages at the seed to base_channels at full
    resolution, where a 3x3 convolution makes the image. (The DCGAN paper's last transposed conv outputs the
    image itself; with only two stages for 28x28 that left the generator too shallow to draw clean strokes.)
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 64,
        base_channels: int = 32,
        num_classes: int | None = None,
    ):
        """
        Args:
            image_shape: (C, H, W) of the images after preprocessing, from `${data.image_shape}`.
            latent_dim: size of the noise vector z ~ N(0, I).
            base_channels: feature maps at full resolution (the seed has base * 2 ** stages).
            num_classes: class-conditional with this many classes: a label embedding of latent_dim values,
                concatenated to z; None: unconditional.
        """
        super().__init__()
        check_sizes("model.generator", latent_dim=latent_dim, base_channels=base_channels)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim = int(latent_dim)
        self.num_classes = _check_classes(num_classes, "model.generator")
        seed, stages = seed_and_stages(self.image_shape, "model.generator.image_shape")
        out_ch = self.image_shape[0]
        ch = base_channels * 2**stages
        self.seed_shape = (ch, seed, seed)

        # project and reshape: the only dense layer, it places the noise on the seed grid
        in_dim = self.latent_dim if self.num_classes is None else 2 * self.latent_dim
        self.project = nn.Linear(in_dim, ch * seed * seed, bias=False)
        self.project_norm = nn.BatchNorm2d(ch)

        # up-sampling stages: 4x4 stride-2 padding-1 transposed convs double H and W exactly
        blocks: list[nn.Module] = []
        for _ in range(stages):
            blocks += [
                nn.ConvTranspose2d(ch, ch // 2, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
        self.blocks = nn.Sequential(*blocks)
        # to image channels, no norm (the DCGAN recipe), tanh to match data in [-1, 1]
        self.to_image = nn.Conv2d(ch, out_ch, kernel_size=3, padding=1)
        self.apply(dcgan_init)
        if self.num_classes is not None:  # N(0, 1) like z, so label and noise start with equal weight
            self.label_emb = nn.Embedding(self.num_classes, self.latent_dim)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images in [-1, 1] of shape (B, C, H, W) from noise `z` (B, latent_dim) [and labels `y` (B,)]."""
        z = _with_labels(self, z, y, lambda y: torch.cat([z, self.label_emb(y)], dim=1))  # (B, [2 x] latent)
        h = self.project(z).view(z.shape[0], *self.seed_shape)  # (B, ch, s, s)
        h = torch.relu(self.project_norm(h))
        h = self.blocks(h)  # (B, base, H, W)
        return torch.tanh(self.to_image(h))  # (B, C, H, W)


class Discriminator(nn.Module):
    """Image -> `stages` 4x4 stride-2 convs with leaky ReLU -> linear -> one logit per image.

    `norm` picks the normalisation after every conv but the first: "batch" (the DCGAN recipe),
    "layer" (GroupNorm with one group), "instance" (GroupNorm with one group per channel) or "none".
    WGAN-GP penalises the gradient of each output with respect to its own input, so it needs a
    per-sample norm: "layer", "instance" or "none".
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        base_channels: int = 32,
        norm: str = "batch",
        dropout: float = 0.0,
        num_classes: int | None = None,
        spectral_norm: bool = False,
    ):
        """
        Args:
            image_shape: (C, H, W) of the images after preprocessing, from `${data.image_shape}`.
            base_channels: feature maps of the first stage; each further stage doubles them.
            norm: "batch", "layer", "instance" or "none" (see the class docstring).
            dropout: dropout after every stage; weakens a discriminator that memorises a small dataset.
            num_classes: a projection discriminator over this many classes; None: unconditional.
            spectral_norm: divide every weight (convs, the logit layer, the class embedding) by its largest
                singular value (Miyato et al. 2018), which keeps the discriminator 1-Lipschitz per layer; the
                projection discriminator's paper trains with it. Usually with norm="none".
        """
        super().__init__()
        check_sizes("model.discriminator", base_channels=base_channels)
        if norm not in NORMS:
            raise ConfigError(f"model.discriminator.norm must be one of {list(NORMS)}, got {norm!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.norm = norm
        self.num_classes = _check_classes(num_classes, "model.discriminator")
        seed, stages = seed_and_stages(self.image_shape, "model.discriminator.image_shape")

        # down-sampling stages mirror the generator: H, W halve and channels double at each stage
        layers: list[nn.Module] = []
        c_in, ch = self.image_shape[0], base_channels
        for i in range(stages):
            # no norm on the first stage (the DCGAN recipe): it would normalise away the pixel statistics
            use_norm = i > 0 and norm != "none"
            layers.append(nn.Conv2d(c_in, ch, kernel_size=4, stride=2, padding=1, bias=not use_norm))
            if use_norm:
                layers.append(self._norm(ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            c_in, ch = ch, ch * 2
        self.features = nn.Sequential(*layers)
        self.to_logit = nn.Linear(c_in * seed * seed, 1)
        self.apply(dcgan_init)
        if self.num_classes is not None:
            # one feature-sized vector per class; N(0, 0.02) like to_logit, so both terms start alike
            self.embed = nn.Embedding(self.num_classes, c_in * seed * seed)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        self.spectral_norm = bool(spectral_norm)
        if self.spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(module)

    def _norm(self, ch: int) -> nn.Module:
        if self.norm == "batch":
            # batch statistics always, in eval mode too: D only ever scores whole batches of real or fake
            # images, and running averages over both kinds would score validation batches differently
            return nn.BatchNorm2d(ch, track_running_stats=False)
        return nn.GroupNorm(1 if self.norm == "layer" else ch, ch)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One unnormalised score (logit, or critic value for WGAN) per image [of class `y` (B,)]: (B,)."""
        h = self.features(x).flatten(1)  # (B, base * 2 ** (stages - 1) * s * s)
        score = self.to_logit(h).squeeze(1)  # (B,)
        # projection: + <embed(y), phi(x)>, the class-specific part of the score
        return _with_labels(self, score, y, lambda y: score + (self.embed(y) * h).sum(dim=1))


def _check_classes(num_classes: int | None, key: str) -> int | None:
    if num_classes is not None and int(num_classes) < 1:
        raise ConfigError(f"{key}.num_classes={num_classes} must be at least 1 (or null: unconditional)")
    return None if num_classes is None else int(num_classes)


def _with_labels(net: nn.Module, value: Tensor, y: Tensor | None, conditioned) -> Tensor:
    """`conditioned(y)` for a conditional net, `value` for an unconditional one; a label mismatch is an error."""
    if net.num_classes is None:
        if y is not None:
            raise ValueError(
                f"this {type(net).__name__} is unconditional (num_classes is null): it takes no labels"
            )
        return value
    if y is None:
        raise ValueError(f"this {type(net).__name__} is class-conditional: pass the labels y")
    return conditioned(y)
