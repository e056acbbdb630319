"""The exponential moving average of a net's weights, what families with EMA sample and evaluate."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_with_warmup(decay: float):
    """An AveragedModel update: EMA whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the n updates
    so far, so that the average of a short run is not dominated by the random initial weights."""

    @torch.no_grad()
    def update(ema: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        # AveragedModel calls this once per group of tensors of one device and dtype
        d = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        if torch.is_floating_point(ema[0]):
            torch._foreach_lerp_(ema, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the model
            for e, c in zip(ema, current, strict=True):
                e.copy_(c)

    return update


def averaged_copy(net: nn.Module, decay: float) -> AveragedModel:
    """A frozen EMA copy of `net` (its buffers averaged too), updated by `.update_parameters(net)`."""
    ema = AveragedModel(net, multi_avg_fn=ema_with_warmup(float(decay)), use_buffers=True)
    ema.requires_grad_(False)  # not trained: kept out of the optimiser, DDP's reducer and grads
    return ema
