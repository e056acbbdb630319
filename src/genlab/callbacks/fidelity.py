"""FID / KID / IS / precision-recall during training: every N validation epochs and once at the end.

Works for any module implementing the ImageGenerator protocol; the values are logged under names that carry
the extractor and sample count (`fid/classifier-mnist5k/5000`), so they reach the trackers and run.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from genlab.errors import ConfigError
from genlab.models.base import ImageGenerator

log = logging.getLogger(__name__)


class FidelityCallback(L.Callback):
    """Compute image metrics of the module's samples against a real split (rank 0 only) and log them.

    On rank 0 alone: under DDP the other ranks wait at their next collective. A sharded strategy (FSDP)
    needs every rank in the forward pass, so this callback is for unsharded runs.
    """

    def __init__(
        self,
        extractor: str = "classifier",
        checkpoint: str | None = None,
        n_samples: int = 5000,
        batch_size: int = 200,
        metrics: Sequence[str] = ("fid", "kid", "is", "pr"),
        every_n_epochs: int = 5,
        at_train_end: bool = True,
        real_split: str = "train",
        n_real: int | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        kid_subset_size: int = 1000,
    ):
        """
        Args:
            extractor: `classifier` (offline, a genlab classifier checkpoint) or `inception-v3-compat`.
            checkpoint: the classifier checkpoint, or a local copy of the Inception weights (None downloads them).
            n_samples: generated images per evaluation (part of every metric's name).
            batch_size: images per sampling / feature batch.
            metrics: any of fid, kid, is, pr.
            every_n_epochs: evaluate after the validation of every n-th epoch; 0 only at the end of training.
            at_train_end: evaluate the final weights once training ends (unless the last validation just did).
            real_split: the split samples are compared with; n_real: how many of its images (None: up to n_samples).
            cache_dir: where the real split's features are cached (`paths.cache_dir`); None disables the cache.
            num_workers: torch-fidelity's loader workers for the real images (0: in-process).
            seed: seeds the samples, so successive evaluations draw the same latents.
            kid_subset_size: KID subset size (capped at the sample counts).
        """
        super().__init__()
        if int(every_n_epochs) < 0:
            raise ConfigError(
                f"callbacks.fidelity.every_n_epochs={every_n_epochs} must be 0 (end only) or more"
            )
        self.options = dict(
            extractor=extractor,
            weights_path=checkpoint,
            n_samples=n_samples,
            batch_size=batch_size,
            metrics=tuple(metrics),
            real_split=real_split,
            n_real=n_real,
            cache_dir=cache_dir,
            num_workers=num_workers,
            seed=seed,
            kid_subset_size=kid_subset_size,
        )
        self.every_n_epochs = int(every_n_epochs)
        self.at_train_end = at_train_end
        self._fidelity = None  # built on first use: torch-fidelity is imported only when this callback runs
        self._last_step: int | None = None  # global step of the last evaluation

    @property
    def fidelity(self):
        if self._fidelity is None:
            from genlab.metrics.fidelity import Fidelity

            self._fidelity = Fidelity(**self.options)
        return self._fidelity

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # a missing checkpoint or bad option fails now, not after the first epochs of training
        if stage == "fit" and isinstance(pl_module, ImageGenerator):
            self.fidelity.identity()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_epochs == 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        metrics = self._evaluate(trainer, pl_module)
        for name, value in metrics.items():
            pl_module.log(name, value, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.at_train_end or self._last_step == trainer.global_step:
            return
        metrics = self._evaluate(trainer, pl_module)
        if not metrics:
            return
        # `log()` is closed once training ends: write where the trackers and the run record read
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        if not trainer.is_global_zero or not isinstance(pl_module, ImageGenerator):
            return {}
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "real_images"):
            log.warning("fidelity: skipped, the trainer has no image datamodule with real_images()")
            return {}
        start = time.perf_counter()
        metrics = self.fidelity.evaluate(pl_module, datamodule)
        seconds = time.perf_counter() - start
        self._last_step = trainer.global_step
        label, _ = self.fidelity.identity()
        reference = "cached" if self.fidelity.last_reference_cached else "computed"
        values = ", ".join(f"{name.split('/')[0]}={value:.4g}" for name, value in metrics.items())
        log.info(
            f"fidelity ({label}, {self.fidelity.n_samples} samples, step {trainer.global_step}): {values} "
            f"in {seconds:.1f} s (reference features {reference}"
            f"{'' if self.fidelity.cache_dir is None else ' in ' + str(Path(self.fidelity.cache_dir))})"
        )
        metrics[f"fidelity_seconds/{label}/{self.fidelity.n_samples}"] = seconds
        return metrics
