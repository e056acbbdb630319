"""The image metrics of one draw of samples: FID & co. (torch-fidelity), novelty and the class metrics.

One component with one set of options (the keys of `callbacks.fidelity` and of `genlab eval`'s `fidelity.*`),
used by the fidelity callback during training and by `genlab eval` on a checkpoint; they differ only in how
the samples are drawn (across DDP ranks, or in one process).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from genlab.errors import ConfigError

# the directions of the metrics it reports (name prefixes, see genlab/directions.py); the rest: smaller is better
METRIC_MODES = {
    "is/": "max",
    "precision/": "max",
    "recall/": "max",
    "cond_acc/": "max",
    "class_kl/": "min",
    "missing_classes/": "min",
}


class ImageMetrics:
    """Scores uint8 samples `[n, C, H, W]` of an image model against a datamodule's real images."""

    def __init__(
        self,
        extractor: str = "classifier",
        checkpoint: str | None = None,
        n_samples: int = 2000,
        batch_size: int = 200,
        metrics: Sequence[str] = ("fid", "kid", "is", "pr"),
        novelty: bool = True,
        novelty_split: str = "test",
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
            checkpoint: the classifier checkpoint, or a local copy of the Inception weights (None downloads
                them). A classifier extractor without a checkpoint skips FID & co.; novelty then uses pixels.
            n_samples: generated images scored (part of every metric's name); batch_size: per forward pass.
            metrics: any of fid, kid, is, pr.
            novelty: also the nearest-training-image distances of the same samples, against `novelty_split`.
            real_split: the split samples are compared with; n_real: how many of its images (None: n_samples).
            cache_dir: where the real split's features are cached; None disables the cache.
            num_workers: torch-fidelity's loader workers for the real images (0: in-process).
            seed: seeds the samples, so successive evaluations draw the same latents.
            kid_subset_size: KID subset size (capped at the sample counts).
            classes: with the classifier extractor, mode coverage of every model and the conditional
                accuracy of a conditional one (sampled class by class).
        """
        if int(n_samples) < 0:
            raise ConfigError(f"fidelity.n_samples={n_samples} must be 0 (no image metrics) or more")
        self.extractor = extractor
        self.checkpoint = checkpoint
        self.n_samples = int(n_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.novelty = bool(novelty)
        self.novelty_split = novelty_split
        self.classes = bool(classes)
        # FID & co. need the extractor's weights; a classifier extractor without them runs novelty alone
        self.scores_fidelity = self.n_samples > 0 and (extractor != "classifier" or bool(checkpoint))
        self._fidelity_options = dict(
            extractor=extractor,
            weights_path=checkpoint,
            n_samples=max(self.n_samples, 2),
            batch_size=batch_size,
            metrics=tuple(metrics),
            real_split=real_split,
            n_real=n_real,
            cache_dir=cache_dir,
            num_workers=num_workers,
            seed=seed,
            kid_subset_size=kid_subset_size,
        )
        self._fidelity = self._novelty = self._class_metrics = None

    @property
    def fidelity(self):
        """torch-fidelity's side (`genlab.metrics.fidelity.Fidelity`), built on first use."""
        if self._fidelity is None:
            from genlab.metrics.fidelity import Fidelity

            self._fidelity = Fidelity(**self._fidelity_options)
        return self._fidelity

    @property
    def label(self) -> str:
        """The extractor's name in metric names (`classifier-mnist5k`, `inception-v3-compat`)."""
        return self.fidelity.identity()[0]

    def labels_for(self, model: Any) -> Tensor | None:
        """The classes a conditional model is asked for, each equally often; None for an unconditional one."""
        from genlab.metrics.conditional import balanced_labels

        num_classes = getattr(model, "num_classes", None)
        return None if num_classes is None else balanced_labels(self.n_samples, num_classes)

    def score(
        self,
        samples: Tensor,
        datamodule: Any,
        labels: Tensor | None = None,
        num_classes: int | None = None,
        cuda: bool = False,
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """(metrics, notes) of `samples` drawn for `labels` (a conditional model of `num_classes` classes):
        {name: value}, and what a report says about them (the extractor, whether the reference features were
        cached, seconds per part, what was skipped)."""
        metrics: dict[str, float] = {}
        notes: dict[str, Any] = {"seconds": {}}
        weights = None
        if self.scores_fidelity:
            start = time.perf_counter()
            metrics |= self.fidelity.evaluate_samples(samples, datamodule, cuda=cuda)
            notes |= {"extractor": self.label, "reference_cached": self.fidelity.last_reference_cached}
            notes["seconds"]["fidelity"] = time.perf_counter() - start
            weights = self.checkpoint if self.extractor == "classifier" else None
        if self.scores_fidelity and self.classes and weights:
            from genlab.metrics.conditional import ClassMetrics

            start = time.perf_counter()
            classes = ClassMetrics(weights, self.label, self.batch_size, self.fidelity.real_split)
            if labels is not None and num_classes != classes.num_classes:
                notes["cond_acc_skipped"] = (
                    f"{num_classes} model classes, {classes.num_classes} classifier ones"
                )
                labels = None
            metrics |= classes.evaluate_samples(samples, datamodule, labels)
            notes["seconds"]["classes"] = time.perf_counter() - start
        if self.novelty:
            from genlab.metrics.novelty import Novelty

            start = time.perf_counter()
            # the classifier's feature space when there is one, raw pixels otherwise
            novelty = Novelty(
                weights, n_samples=len(samples), batch_size=self.batch_size,
                heldout_split=self.novelty_split, seed=self.seed,
            )  # fmt: skip
            metrics |= novelty.evaluate_samples(samples, datamodule)
            notes["novelty_features"] = novelty.label
            notes["seconds"]["novelty"] = time.perf_counter() - start
        return metrics, notes

    def describe_cache(self) -> str:
        return "" if self.fidelity.cache_dir is None else f" in {Path(self.fidelity.cache_dir)}"
