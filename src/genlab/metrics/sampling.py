"""Draw an ImageGenerator's samples for evaluation: in one process, or split across the ranks of a DDP/FSDP
group and gathered, so every rank does an equal share of the work and the metrics see exactly `n` images."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:  # the protocol's module imports Lightning: not needed to draw (or in spawned test ranks)
    from genlab.models.base import ImageGenerator


def to_uint8(images: Tensor) -> Tensor:
    """Images in [0, 1] -> uint8 on the 0..255 grid, channels kept: what the metrics read (4x smaller than float)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def draw(
    model: ImageGenerator, n: int, batch_size: int, generator: torch.Generator, labels: Tensor | None = None
) -> Tensor:
    """`n` samples of `model` as uint8 `[n, C, H, W]` on the CPU, in batches; the model is in eval mode meanwhile.
    `labels` [n] (a conditional model) are the classes asked for; None leaves them to the model."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        batches = []
        for i in range(0, n, batch_size):
            size = min(batch_size, n - i)
            extra = {} if labels is None else {"labels": labels[i : i + size].to(model.device)}
            batches.append(to_uint8(model.sample(size, generator=generator, **extra)).cpu())
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return torch.cat(batches)


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _collective_device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo moves CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def draw_across_ranks(
    model: ImageGenerator, n: int, batch_size: int, seed: int, labels: Tensor | None = None
) -> Tensor:
    """`n` samples drawn by all ranks together, returned (uint8, CPU) on every rank.

    Every rank draws ceil(n / world) images with the same batch sizes, so a sharded model (FSDP), whose
    forward pass is a collective, runs the same number of forwards everywhere; the few surplus images of
    the last rank are dropped. Rank r seeds its draws with `seed + r`: outside a group this is `draw` with
    `seed`, so a single-process evaluation gives the same samples. `labels` [n]: the class of each sample (rank
    r draws those of its slice).
    """
    rank, size = world()
    if size == 1:
        return draw(model, n, batch_size, torch.Generator().manual_seed(seed), labels)
    share = math.ceil(n / size)
    if labels is not None:  # the last rank's surplus images repeat the first labels; they are dropped
        labels = labels.repeat(size)[rank * share : (rank + 1) * share]
    local = draw(model, share, batch_size, torch.Generator().manual_seed(seed + rank), labels)
    local = local.to(_collective_device())
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local)
    return torch.cat(parts)[:n].cpu()


def broadcast_from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank; outside a group, `value` itself."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]
