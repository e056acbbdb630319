"""Interpolation grids: one row per path, from the latents of two seeds (slerp) or two real images (VAE).

Latents drawn from N(0, I) concentrate on a sphere of radius ~sqrt(d); spherical interpolation stays on it,
where a straight line would pass through the unlikely, low-norm middle (Shoemake 1985; White 2016).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError
from genlab.generation.images import accepts, progress
from genlab.models.base import LatentImageGenerator


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Points at fractions `t` (K,) of the great-circle arc from `a` to `b` (any equal shapes) -> (K, *a.shape).

    The norm is interpolated linearly along the arc's angle; t = 0 and t = 1 give `a` and `b` exactly.
    Nearly parallel latents fall back to a straight line (the arc's sine would vanish).
    """
    a64, b64 = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a64 / a64.norm(), b64 / b64.norm()).clamp(-1.0, 1.0)
    omega = float(torch.arccos(cos))
    points = []
    for ti in t.tolist():
        if math.sin(omega) < 1e-6:
            wa, wb = 1.0 - ti, ti
        else:
            wa, wb = math.sin((1 - ti) * omega) / math.sin(omega), math.sin(ti * omega) / math.sin(omega)
        points.append(a * wa + b * wb)  # in a's dtype: the ends are a * 1 + b * 0 and a * 0 + b * 1
    return torch.stack(points)


def seed_pairs(seed: int, rows: int) -> list[tuple[int, int]]:
    """The seeds each row walks between: (seed, seed + 1), (seed + 2, seed + 3), ..."""
    return [(seed + 2 * r, seed + 2 * r + 1) for r in range(rows)]


@torch.no_grad()
def latent_paths(module: Any, pairs: list[tuple[int, int]], points: int, batch_size: int) -> Tensor:
    """[rows, points, C, H, W] in [0, 1]: row r decodes `points` latents on the slerp between the latents of
    seeds pairs[r]. Each end equals `module.sample(1, generator=torch.Generator().manual_seed(that seed))`."""
    if not isinstance(module, LatentImageGenerator):
        raise ConfigError(
            f"mode=interpolate needs a model that samples from latents (draw_latents / sample_from_latents); "
            f"{type(module).__name__} has none"
        )
    t = torch.linspace(0.0, 1.0, points)
    latents = []
    for seed_a, seed_b in pairs:
        z_a = module.draw_latents(1, torch.Generator().manual_seed(seed_a))[0]
        z_b = module.draw_latents(1, torch.Generator().manual_seed(seed_b))[0]
        latents.append(slerp(z_a, z_b, t))
    flat = torch.cat(latents)  # (rows * points, *latent shape)
    images = _decode(module, flat, batch_size)
    return images.view(len(pairs), points, *images.shape[1:])


def _decode(module: Any, latents: Tensor, batch_size: int) -> Tensor:
    steps = getattr(getattr(module, "sampler", None), "num_inference_steps", None)
    per_call = steps if steps and accepts(module.sample_from_latents, "callback") else None
    batches = math.ceil(len(latents) / batch_size)
    out = []
    with progress(batches * (per_call or 1), f"decoding {len(latents)} latents") as advance:
        for start in range(0, len(latents), batch_size):
            extra: dict[str, Callable] = {"callback": advance} if per_call else {}
            chunk = latents[start : start + batch_size]
            out.append(module.sample_from_latents(chunk, **extra).float().clamp(0, 1).cpu())
            if not per_call:
                advance()
    return torch.cat(out)


@torch.no_grad()
def data_paths(module: Any, real: Tensor, rows: int, points: int, seed: int) -> Tensor:
    """[rows, points, C, H, W] in [0, 1]: row r decodes the line between the posterior means of two real
    images (`real` [N, C, H, W] in [0, 1]) picked by `seed`; each end equals the image's reconstruction."""
    if not hasattr(module, "interpolate"):
        raise ConfigError(
            f"source=data interpolates between the codes of real images: {type(module).__name__} has no "
            "encoder (VAEs do); use source=noise"
        )
    if len(real) < 2 * rows:
        raise DataError(f"source=data needs {2 * rows} real images but the split has {len(real)}: lower rows")
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[: 2 * rows]
    pairs = real[order].view(rows, 2, *real.shape[1:]) * 2.0 - 1.0  # the model reads [-1, 1]
    x_a, x_b = pairs[:, 0].to(module.device), pairs[:, 1].to(module.device)
    return module.interpolate(x_a, x_b, steps=points).float().clamp(0, 1).cpu()
