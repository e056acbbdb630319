"""Learning-rate schedules as plain functions of (optimizer, total_steps), for `_partial_` configs."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
) -> LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio * lr` at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def cosine(optimizer: torch.optim.Optimizer, total_steps: int, min_lr_ratio: float = 0.1) -> LambdaLR:
    """Cosine decay from the optimiser's lr to `min_lr_ratio * lr` at `total_steps`, no warm-up."""
    return warmup_cosine(optimizer, total_steps, warmup_steps=0, min_lr_ratio=min_lr_ratio)
