"""The protocols callbacks and `genlab sample` rely on, and the optimiser wiring every family shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import Tensor


@runtime_checkable
class ImageGenerator(Protocol):
    """An image family: `sample(n)` returns `[n, C, H, W]` images with values in [0, 1].

    A class-conditional model (`num_classes` set) draws images of the requested `labels` (an int, or one per
    image; None: uniform from `generator`); diffusion also takes a guidance scale (`guidance`). An
    unconditional model (`num_classes` None) refuses labels with a `ConfigError` (see `sample_labels`).
    (`num_classes` is a plain attribute, not part of the runtime check, so older generators still match.)
    """

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
    ) -> Tensor: ...


@runtime_checkable
class LatentImageGenerator(ImageGenerator, Protocol):
    """An image family whose samples are a function of latents drawn first: `sample(n, generator)` equals
    `sample_from_latents(draw_latents(n, generator), generator)`, so `genlab sample mode=interpolate` can walk
    between the latents of two seeds (a deterministic `sample_from_latents` makes the walk a smooth path)."""

    def draw_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def sample_from_latents(
        self,
        latents: Tensor,
        generator: torch.Generator | None = None,
        labels: Tensor | int | None = None,
        guidance: float | None = None,
    ) -> Tensor: ...


def sample_labels(
    module: Any,
    n: int,
    labels: Tensor | int | Sequence[int] | None,
    generator: torch.Generator | None = None,
    guidance: float | None = None,
    guided: bool = True,
) -> Tensor | None:
    """The class of each of `n` images [n] (long, on the module's device) for `module.sample`, or None for an
    unconditional module; bad requests are one `ConfigError` line.

    A conditional module without `labels` draws them uniformly from `generator` (on its device, so a seed
    gives the same classes on any accelerator); `guided` says whether the family takes a guidance scale.
    """
    from genlab.errors import ConfigError

    name, num_classes = type(module).__name__, getattr(module, "num_classes", None)
    if num_classes is None:
        if labels is not None or guidance is not None:
            what = f"labels={_short(labels)}" if labels is not None else f"guidance={guidance}"
            raise ConfigError(
                f"{what}: {name} is unconditional (model.num_classes is null), so it takes no labels or "
                "guidance; leave them out, or train it with model.num_classes=${runtime.num_classes}"
            )
        return None
    if guidance is not None and not guided:
        raise ConfigError(
            f"guidance={guidance}: only diffusion models take a guidance scale, {name} does not"
        )
    if guidance is not None and guidance < 0:
        raise ConfigError(f"guidance={guidance} must be 0 (unconditional) or more")
    device = module.device
    if labels is None:
        where = generator.device if generator is not None else device
        return torch.randint(num_classes, (n,), generator=generator, device=where).to(device)
    y = torch.as_tensor(labels, dtype=torch.long).to(device)
    if y.dim() == 0:
        y = y.expand(n)
    if y.shape != (n,):
        raise ConfigError(f"{len(y)} labels for {n} images: give one label, or one per image")
    if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < num_classes:
        raise ConfigError(
            f"labels={_short(labels)}: {name} has classes 0 to {num_classes - 1}; ask for labels in that range"
        )
    return y


def _short(labels: Any) -> str:
    values = labels.tolist() if isinstance(labels, Tensor) else labels
    text = str(values)
    return text if len(text) <= 40 else text[:37] + "..."


@runtime_checkable
class LanguageModel(Protocol):
    """A language family: autoregressive generation from a prompt of token ids."""

    def generate(
        self,
        prompt_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> Tensor: ...


OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class GenerativeModule(L.LightningModule):
    """Base for all families: holds the optimiser/scheduler partials and builds them in configure_optimizers.

    The partials come from `conf/optimizer` and `conf/scheduler` (`_partial_: true`); the scheduler
    is called with `total_steps` (the trainer's estimate) and steps every optimisation step.

    A family declares here what shared code needs to know about it, so that adding one touches no shared list.
    """

    # "image" (sample(n) -> images: FID, grids), "text" (generate: perplexity, text samples) or "seq2seq"
    # (translate: BLEU); evaluation, sampling and serving choose their path by it
    modality: ClassVar[str] = "image"
    # the attributes holding its plain nn.Modules (`compile=true` compiles these)
    net_names: ClassVar[tuple[str, ...]] = ("net",)
    # the direction of the metrics it logs whose best value is the largest ({"val/elbo": "max"}); every other
    # metric it logs is a loss-like one, best when smallest. Written to run.json for `genlab compare`
    metric_modes: ClassVar[dict[str, str]] = {}

    def __init__(self, optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None):
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # families with EMA weights sample and evaluate them while this is True; False uses the raw
        # weights (`genlab sample weights=raw`)
        self.use_ema = True

    @property
    def has_ema(self) -> bool:
        """Whether this module keeps an exponential moving average of its weights (the family's choice)."""
        return False

    def build_optimizer(self, params) -> dict[str, Any] | torch.optim.Optimizer:
        """One optimiser (and its scheduler, if configured) over `params`, in Lightning's return format."""
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured: select one with optimizer=adam|adamw|sgd")
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_optimizers(self):
        return self.build_optimizer(self.parameters())

    def log_diagnostics(self, metrics: dict[str, Any]) -> None:
        """`log_dict` for training-step values that only the loggers read (not the progress bar, a checkpoint or
        a guard), on the steps whose metrics row Lightning writes: every `trainer.log_every_n_steps` and the
        last by `trainer.max_steps` (every step when no logger is attached). The rows hold the same values;
        `trainer.callback_metrics` holds those of the last row. Lightning's `log` costs 0.3-1 ms a value on a
        CPU, written or not: a few percent of a small model's step (docs/performance.md)."""
        if self._writes_metrics_row():
            self.log_dict(metrics)

    def _writes_metrics_row(self) -> bool:
        trainer = self._trainer
        if trainer is None or not trainer.loggers or trainer.fast_dev_run:
            return True
        # optimiser steps in this batch: a GAN's global_step counts both networks' steps
        last = 0 < trainer.max_steps <= trainer.global_step + (1 if self.automatic_optimization else 2)
        # the logger connector's own test (a private name, pinned by tests/callbacks/test_lightning_internals.py)
        return last or trainer._logger_connector.should_update_logs

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one line, a checkpoint whose weights do not fit this module (another family or size)."""
        from genlab.errors import CheckpointError

        strategy = getattr(self._trainer, "strategy", None)
        if strategy is not None and not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)):
            return  # a sharding strategy (FSDP) holds flattened shards here: it checks the keys itself
        ours, theirs = set(self.state_dict()), set(checkpoint.get("state_dict", {}))
        if ours != theirs:
            missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
            example = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
            raise CheckpointError(
                f"the checkpoint's weights do not fit {type(self).__name__} ({example}): it comes from another "
                "family or architecture; resume with the config it was trained with"
            )
        shapes = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        for key, value in checkpoint["state_dict"].items():
            if tuple(value.shape) != shapes[key]:
                raise CheckpointError(
                    f"the checkpoint's {key} has shape {tuple(value.shape)} but {type(self).__name__} has "
                    f"{shapes[key]}: it comes from another architecture; resume with the config it was trained with"
                )
