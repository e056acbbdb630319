"""The protocols callbacks and `genlab sample` rely on, and the optimiser wiring every family shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import Tensor


@runtime_checkable
class ImageGenerator(Protocol):
    """An image family: `sample(n)` returns `[n, C, H, W]` images with values in [0, 1]."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class LatentImageGenerator(ImageGenerator, Protocol):
    """An image family whose samples are a function of latents drawn first: `sample(n, generator)` equals
    `sample_from_latents(draw_latents(n, generator), generator)`, so `genlab sample mode=interpolate` can walk
    between the latents of two seeds (a deterministic `sample_from_latents` makes the walk a smooth path)."""

    def draw_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def sample_from_latents(self, latents: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


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
    """

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
