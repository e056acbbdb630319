"""FID / KID / IS / precision-recall (and novelty, class metrics) during training: every N validation epochs
and once at the end.

Works for any module implementing the ImageGenerator protocol; the values are logged under names that carry
the extractor and sample count (`fid/classifier-mnist5k/5000`), so they reach the trackers and run.json.
A class-conditional module (`num_classes` set) is sampled for every class in turn, and with the classifier
extractor every module gets mode coverage and a conditional one conditional accuracy (metrics/conditional.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from genlab.errors import ConfigError
from genlab.metrics.images import METRIC_MODES, ImageMetrics
from genlab.models.base import ImageGenerator

log = logging.getLogger(__name__)

IF_MISSING = ("error", "warn")
PER_CLASS = re.compile(r"/class\d+/")  # per-class values (cond_acc/class3/...): in run.json, not the log line
MAKE_CLASSIFIER = "genlab train experiment=mnist_classifier"


class FidelityCallback(L.Callback):
    """Compute image metrics of the module's samples against a real split and log them.

    Under DDP/FSDP every rank draws its share of the samples (metrics/sampling.py), rank 0 scores them all,
    and every rank logs rank 0's values. Novelty (nearest-training-image distances, metrics/novelty.py) and
    the class metrics are computed on the same samples, in the classifier's view when it is the extractor.
    """

    metric_modes = METRIC_MODES  # the directions of what it logs (genlab/directions.py)

    def __init__(
        self,
        extractor: str = "classifier",
        checkpoint: str | None = None,
        if_missing: str = "error",
        n_samples: int = 5000,
        batch_size: int = 200,
        metrics: Sequence[str] = ("fid", "kid", "is", "pr"),
        novelty: bool = False,
        novelty_split: str = "test",
        every_n_epochs: int = 5,
        at_train_end: bool = True,
        real_split: str = "train",
        n_real: int | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        kid_subset_size: int = 1000,
        classes: bool = True,
    ):
        """
        Args:
            extractor: `classifier` (offline, a genlab classifier checkpoint) or `inception-v3-compat`.
            checkpoint: the classifier checkpoint, or a local copy of the Inception weights (None downloads them).
            if_missing: a classifier checkpoint that does not exist: `error` fails at the start of training,
                `warn` logs one line and trains without these metrics.
            n_samples: generated images per evaluation (part of every metric's name); 0 turns the callback off
                (the hyperparameter searches' default: FID is not their objective, and costs minutes a trial).
            batch_size: images per sampling / feature batch.
            metrics: any of fid, kid, is, pr.
            novelty: also compute the novelty statistics of (the first images of) the same samples.
            novelty_split: the held-out real images novelty compares with (their count caps the novelty count).
            every_n_epochs: evaluate after the validation of every n-th epoch; 0 only at the end of training.
            at_train_end: evaluate the final weights once training ends (unless the last validation just did).
            real_split: the split samples are compared with; n_real: how many of its images (None: up to n_samples).
            cache_dir: where the real split's features are cached (`paths.cache_dir`); None disables the cache.
            num_workers: torch-fidelity's loader workers for the real images (0: in-process).
            seed: seeds the samples, so successive evaluations draw the same latents.
            kid_subset_size: KID subset size (capped at the sample counts).
            classes: with the classifier extractor, also mode coverage (class histogram, its KL from the data's
                class distribution, classes under half their share) and, for a conditional model, the
                conditional accuracy of samples requested class by class.
        """
        super().__init__()
        if int(every_n_epochs) < 0:
            raise ConfigError(
                f"callbacks.fidelity.every_n_epochs={every_n_epochs} must be 0 (end only) or more"
            )
        if int(n_samples) < 0:
            raise ConfigError(f"callbacks.fidelity.n_samples={n_samples} must be 0 (no FID) or more")
        if if_missing not in IF_MISSING:
            raise ConfigError(f"callbacks.fidelity.if_missing={if_missing!r}: choose error or warn")
        self.if_missing = if_missing
        self.every_n_epochs = int(every_n_epochs)
        self.at_train_end = at_train_end
        self.checkpoint = checkpoint
        self.extractor = extractor
        self.metrics = ImageMetrics(
            extractor=extractor,
            checkpoint=checkpoint,
            n_samples=n_samples,
            batch_size=batch_size,
            metrics=metrics,
            novelty=novelty,
            novelty_split=novelty_split,
            real_split=real_split,
            n_real=n_real,
            cache_dir=cache_dir,
            num_workers=num_workers,
            seed=seed,
            kid_subset_size=kid_subset_size,
            classes=classes,
        )
        # False with n_samples=0, or once a missing classifier was accepted (if_missing=warn)
        self.enabled = int(n_samples) > 0
        self._last_step: int | None = None  # global step of the last evaluation

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # a missing checkpoint or bad option fails now, not after the first epochs of training
        if stage != "fit" or not isinstance(pl_module, ImageGenerator):
            return
        if not self.enabled:
            if trainer.is_global_zero:
                log.info("FID off (callbacks.fidelity.n_samples=0)")
            return
        path = self.checkpoint
        if self.extractor == "classifier" and not (path and Path(path).expanduser().is_file()):
            if self.if_missing == "warn":
                self.enabled = False
                if trainer.is_global_zero:
                    log.warning(f"FID skipped: no classifier at {path}; make it with `{MAKE_CLASSIFIER}`")
                return
            raise ConfigError(
                f"FID needs a classifier, and there is none at {path}: make it with `{MAKE_CLASSIFIER}` "
                f"(or set callbacks.fidelity.checkpoint to a classifier checkpoint)"
            )
        self.metrics.fidelity.identity()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_epochs == 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        metrics = self._evaluate(trainer, pl_module)
        for name, value in metrics.items():
            pl_module.log(name, value)  # every rank holds rank 0's values: nothing to reduce

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
        if not self.enabled or not isinstance(pl_module, ImageGenerator):
            return {}
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "real_images"):
            if trainer.is_global_zero:
                log.warning("fidelity: skipped, the trainer has no image datamodule with real_images()")
            return {}
        from genlab.metrics.sampling import broadcast_from_rank_zero, draw_across_ranks

        start = time.perf_counter()
        scorer = self.metrics
        # a conditional model: every class asked for equally often, so FID sees a balanced mix
        labels = scorer.labels_for(pl_module)
        # every rank draws its share (a sharded model needs all of them in each forward pass)
        samples = draw_across_ranks(pl_module, scorer.n_samples, scorer.batch_size, scorer.seed, labels)
        metrics = None
        if trainer.is_global_zero:
            num_classes = getattr(pl_module, "num_classes", None)
            cuda = pl_module.device.type == "cuda"
            metrics, notes = scorer.score(samples, datamodule, labels, num_classes, cuda=cuda)
            if "cond_acc_skipped" in notes:
                log.warning(f"fidelity: no conditional accuracy ({notes['cond_acc_skipped']})")
            seconds = time.perf_counter() - start
            metrics[f"fidelity_seconds/{scorer.label}/{scorer.n_samples}"] = seconds
            reference = "cached" if notes.get("reference_cached") else "computed"
            values = ", ".join(  # names without their `/<extractor>/<count>` suffix
                f"{name.rsplit('/', 2)[0]}={value:.4g}"
                for name, value in metrics.items()
                if not name.startswith("fidelity_seconds/") and not PER_CLASS.search(name)  # those: run.json
            )
            log.info(
                f"fidelity ({scorer.label}, {scorer.n_samples} samples, step {trainer.global_step}): {values} "
                f"in {seconds:.1f} s (reference features {reference}{scorer.describe_cache()})"
            )
        metrics = broadcast_from_rank_zero(metrics)
        self._last_step = trainer.global_step
        return metrics
