"""A small DDPM-style UNet: predicts the noise (or v) in x_t given the timestep t (and, optionally, a class).

Sinusoidal timestep embedding (plus a learnt class embedding when `num_classes` is set) -> residual blocks
conditioned on it, self-attention at low resolution,
a down path whose activations are concatenated into the up path. Each level halves the resolution with a
strided convolution (28 -> 14 -> 7, 32 -> 16 -> 8), so H and W must be divisible by 2^(levels - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nets import check_sizes


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal embedding of (possibly fractional) timesteps: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))  # odd dims: one zero column


def norm(channels: int) -> nn.GroupNorm:
    # about 4+ channels per group and at most 32 groups, as in DDPM/EDM; gcd keeps the group count a divisor
    return nn.GroupNorm(math.gcd(channels, max(1, min(32, channels // 4))), channels)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the time embedding added in between, plus a (1x1 if needed) skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as the identity: deep stacks train from step one
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # every channel shifted by its share of the timestep
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, residual."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, nh, HW, hs)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, nh, HW, hs)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class Level(nn.Module):
    """One resolution of the down or up path: residual blocks (each optionally followed by attention),
    then a resampling layer (none at the bottom of the down path / the top of the up path)."""

    def __init__(self, blocks: list[ResBlock], attns: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)
        self.resample = resample


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution (avoids the checkerboard of transposed convolutions)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _check_arguments(
    image_shape: Sequence[int],
    base_channels: int,
    channel_mults: Sequence[int],
    num_res_blocks: int,
    attention_levels: Sequence[int],
    num_heads: int,
    num_classes: int | None,
) -> tuple[int, int, int]:
    """(C, H, W) of the data, once the UNet's arguments are known to fit it and each other; else one line."""
    check_sizes("model.net", base_channels=base_channels, num_res_blocks=num_res_blocks, num_heads=num_heads)
    C, H, W = (int(s) for s in image_shape)
    levels = len(channel_mults)
    if levels < 1:
        raise ConfigError("model.net.channel_mults is empty: give one multiplier per level, e.g. [1, 2, 2]")
    factor = 2 ** (levels - 1)
    if H % factor or W % factor:
        raise ConfigError(
            f"UNet cannot take {H}x{W} images with {levels} channel_mults: each level after the first "
            f"halves the size, so H and W must be divisible by {factor}; shorten model.net.channel_mults "
            f"(28x28 takes at most 3 levels, 32x32 up to 6) or resize the data (data.image_shape)"
        )
    if any(not 0 <= i < levels for i in attention_levels):
        raise ConfigError(
            f"model.net.attention_levels {list(attention_levels)} must be level indices 0..{levels - 1} "
            f"(one level per entry of channel_mults, 0 = full resolution)"
        )
    for i, mult in enumerate(channel_mults):
        # attention at the listed levels, and always in the middle (after the last level)
        if (i in attention_levels or i == levels - 1) and (base_channels * mult) % num_heads:
            raise ConfigError(
                f"model.net.num_heads={num_heads} does not divide the {base_channels * mult} channels "
                f"of level {i}: change num_heads or base_channels"
            )
    if num_classes is not None and int(num_classes) < 1:
        raise ConfigError(
            f"model.net.num_classes={num_classes} must be at least 1 (or null for an unconditional net)"
        )
    return C, H, W


class UNet(nn.Module):
    """Noise-prediction UNet: `forward(x_t [B, C, H, W], t [B], y [B] | None) -> [B, C, H, W]`.

    With `num_classes` set, a class embedding is added to the time embedding (as in classifier-free guidance,
    Ho & Salimans 2022); index `num_classes` is the "null" class the unconditional prediction uses, and a
    missing `y` means null for every image. Without it the net is unconditional and has no extra weights.
    """

    def __init__(
        self,
        image_shape: Sequence[int],  # (C, H, W) of the data, e.g. ${data.image_shape}
        base_channels: int = 32,  # channels at full resolution; level i has base_channels * channel_mults[i]
        channel_mults: Sequence[int] = (1, 2, 2),  # one per level; each level after the first halves H, W
        num_res_blocks: int = 1,  # residual blocks per level on the down path (the up path has one more)
        attention_levels: Sequence[int] = (2,),  # levels (0 = full size) with attention after each block
        dropout: float = 0.0,  # dropout inside residual blocks
        num_heads: int = 4,  # attention heads; must divide the channels of every attention level
        num_classes: int | None = None,  # class-conditional with this many classes (+1 null class); None: not
    ):
        super().__init__()
        C, H, W = _check_arguments(
            image_shape,
            base_channels,
            channel_mults,
            num_res_blocks,
            attention_levels,
            num_heads,
            num_classes,
        )
        levels = len(channel_mults)
        self.image_shape = (C, H, W)  # samplers and the diffusion module read the data shape from the net
        self.base_channels = base_channels
        self.num_classes = None if num_classes is None else int(num_classes)

        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if self.num_classes is not None:  # only then: an unconditional net keeps its state_dict keys
            self.class_emb = nn.Embedding(self.num_classes + 1, emb_dim)  # the last row is the null class
        self.conv_in = nn.Conv2d(C, base_channels, 3, padding=1)

        def attention(ch: int, level: int) -> nn.Module:
            return Attention(ch, num_heads) if level in attention_levels else nn.Identity()

        # down path: remember the channels of every activation that is handed to the up path
        ch = base_channels
        skip_channels = [ch]
        self.down = nn.ModuleList()
        for i, mult in enumerate(channel_mults):
            out = base_channels * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, out, emb_dim, dropout))
                attns.append(attention(out, i))
                ch = out
                skip_channels.append(ch)
            last = i == levels - 1
            down = None if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1)
            if not last:
                skip_channels.append(ch)
            self.down.append(Level(blocks, attns, down))

        self.mid_block1 = ResBlock(ch, ch, emb_dim, dropout)
        self.mid_attn = Attention(ch, num_heads)
        self.mid_block2 = ResBlock(ch, ch, emb_dim, dropout)

        # up path: one block more per level than on the way down, to consume the resampling skip too
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            out = base_channels * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(ch + skip_channels.pop(), out, emb_dim, dropout))
                attns.append(attention(out, i))
                ch = out
            self.up.append(Level(blocks, attns, Upsample(ch) if i > 0 else None))

        self.norm_out = norm(ch)
        self.conv_out = nn.Conv2d(ch, C, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # predict zero at init: the loss starts at the target's variance
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))  # (B, emb_dim)
        if self.num_classes is not None:
            if y is None:  # unconditional prediction: the null class
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.class_emb(y)  # (B, emb_dim)
        elif y is not None:
            raise ConfigError(
                "this UNet is unconditional (model.net.num_classes is null): it takes no labels"
            )

        h = self.conv_in(x)  # (B, base, H, W)
        skips = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)  # (B, ch, H/2, W/2)
                skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)

        for level in self.up:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if level.resample is not None:
                h = level.resample(h)  # (B, ch, 2H, 2W)

        return self.conv_out(F.silu(self.norm_out(h)))
