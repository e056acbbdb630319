"""Image samples in batches with a progress bar, written as one grid PNG and/or one PNG per sample."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genlab.errors import ConfigError

FORMATS = ("grid", "files", "both")
GRID_FILE = "grid.png"
FILE_PATTERN = "{:06d}.png"  # one file per sample: the names FID tools read in order


def accepts(fn: Callable, name: str) -> bool:
    """Whether `fn` takes a keyword argument `name` (an optional protocol extra: labels, callback)."""
    return name in inspect.signature(fn).parameters


def steps_per_call(module: Any) -> int | None:
    """Network passes per `sample()` call when the module reports them through `callback` (diffusion)."""
    sampler = getattr(module, "sampler", None)
    steps = getattr(sampler, "num_inference_steps", None)
    return int(steps) if steps and accepts(module.sample, "callback") else None


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr (shown on a terminal, then removed); yields `advance()`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda *_: bar.advance(task)


def labels_for(module: Any, labels: Any, n: int, nrow: int | None = None) -> tuple[Tensor | None, int | None]:
    """(the class of each image, images per grid row) for `labels`: an int or a list (repeated to n), or
    "all": one row per class of ceil(n / classes) images (`nrow` of them if given). An unconditional model
    refuses labels in one line."""
    if labels is None:
        return None, nrow
    num_classes = getattr(module, "num_classes", None)
    if num_classes is None:
        raise ConfigError(
            f"labels={labels}: {type(module).__name__} is unconditional (model.num_classes is null); "
            "leave labels out"
        )
    if labels == "all":
        per_row = nrow or math.ceil(n / num_classes)
        return torch.arange(num_classes).repeat_interleave(per_row), per_row
    many = isinstance(labels, Sequence) and not isinstance(labels, str)  # a list or a ListConfig
    try:
        values = [int(v) for v in (labels if many else [labels])]
        if not values:
            raise ValueError("no labels")
    except (TypeError, ValueError):
        raise ConfigError(
            f"labels={labels}: give a class index, a list of them (labels=[0,1,2]) or labels=all"
        ) from None
    if not all(0 <= v < num_classes for v in values):
        raise ConfigError(f"labels={labels}: {type(module).__name__} has classes 0 to {num_classes - 1}")
    return torch.tensor([values[i % len(values)] for i in range(n)], dtype=torch.long), nrow


@torch.no_grad()
def draw(
    module: Any,
    n: int,
    batch_size: int,
    generator: torch.Generator,
    labels: Tensor | None = None,
    guidance: float | None = None,
) -> Tensor:
    """`n` samples as float [n, C, H, W] in [0, 1] on the CPU, `batch_size` at a time from one generator;
    `labels` [n] and `guidance` go to a conditional model's `sample()`."""
    steps = steps_per_call(module)
    batches = math.ceil(n / batch_size)
    images = []
    with progress(batches * (steps or 1), f"sampling {n} images") as advance:
        extra: dict[str, Any] = {"callback": advance} if steps else {}
        if guidance is not None:  # an unconditional model refuses it in one line
            extra["guidance"] = float(guidance)
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            if labels is not None:
                extra["labels"] = labels[start : start + size].to(module.device)
            images.append(module.sample(size, generator=generator, **extra).float().clamp(0, 1).cpu())
            if not steps:
                advance()
    return torch.cat(images)


def save(images: Tensor, out: Path, fmt: str, nrow: int | None = None) -> list[Path]:
    """Write `images` [n, C, H, W] in [0, 1] into `out`: a grid, one PNG each, or both; returns the paths.

    Per-sample files of an earlier call in the same folder are removed first, so the folder holds exactly
    this call's samples (a FID tool reads them all).
    """
    from torchvision.utils import make_grid, save_image

    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: choose one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt in ("grid", "both"):
        grid = make_grid(images, nrow=nrow or math.ceil(math.sqrt(len(images))), padding=2)
        save_image(grid, out / GRID_FILE)
        written.append(out / GRID_FILE)
    if fmt in ("files", "both"):
        for old in out.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
            old.unlink()
        for i, image in enumerate(images):
            save_image(image, out / FILE_PATTERN.format(i))
            written.append(out / FILE_PATTERN.format(i))
    return written


def configure_sampler(
    module: Any, sampler: str | None, steps: int | None, eta: float | None, deterministic: bool = False
) -> str | None:
    """Give a diffusion module another reverse process (`sampler=ddim steps=20 eta=0`) without retraining;
    `deterministic` (interpolation) asks for DDIM with eta = 0. Returns a description, or None if unchanged."""
    if not hasattr(module, "make_sampler"):
        if sampler is not None or steps is not None or eta is not None:
            raise ConfigError(
                f"sampler=/steps=/eta= choose a diffusion model's reverse process; {type(module).__name__} "
                "has none: leave them out"
            )
        return None
    if sampler is None and steps is None and eta is None and not deterministic:
        return None
    hp = module.hparams
    name = sampler or ("ddim" if deterministic else hp.sampler)
    eta = float(eta if eta is not None else (0.0 if deterministic else hp.eta))
    if deterministic and (name != "ddim" or eta != 0):
        raise ConfigError(
            f"mode=interpolate needs a deterministic sampler (a smooth path from noise to image): use "
            f"sampler=ddim eta=0, not sampler={name} eta={eta}"
        )
    # the run's step count only carries over to the sampler it was chosen for
    steps = steps if steps is not None else (hp.num_inference_steps if name == hp.sampler else None)
    module.sampler = module.make_sampler(name, steps, eta, hp.clip_sample)
    described = f"{name}, {module.sampler.num_inference_steps} steps"
    return described + (f", eta={eta:g}" if name == "ddim" else "")
