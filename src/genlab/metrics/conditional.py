"""Class metrics of image generators under genlab's classifier: conditional accuracy and mode coverage.

The classifier is the one registered as the `classifier` feature extractor (metrics/extractors.py) and sees the
samples exactly as FID does (uint8, then [-1, 1]). Conditional accuracy is the share of samples it assigns to
the class they were asked for (per class and overall). Mode coverage, for any image model, compares the class
histogram of the samples with the data's class distribution: KL(samples || data) in nats, and the number of
classes drawn less than half as often as the data has them (a collapsed GAN's missing digits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

# a class drawn less often than this share of its data frequency counts as missing
MISSING_BELOW = 0.5


def balanced_labels(n: int, num_classes: int) -> Tensor:
    """0, 1, ..., C-1, 0, 1, ... (n labels): every class requested equally often (to within one)."""
    return torch.arange(n) % num_classes


def class_histogram(predicted: Tensor, num_classes: int) -> Tensor:
    """Counts [C] of each class among the predicted classes [n]."""
    return torch.bincount(predicted.long().cpu(), minlength=num_classes)[:num_classes]


def conditional_accuracy(predicted: Tensor, requested: Tensor, num_classes: int) -> tuple[float, Tensor]:
    """(share of all samples classified as requested, per-class share [C]: NaN for classes never requested)."""
    predicted, requested = predicted.long().cpu(), requested.long().cpu()
    if predicted.shape != requested.shape or not len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(requested)} requested labels")
    hit = (predicted == requested).double()
    asked = torch.bincount(requested, minlength=num_classes)[:num_classes].double()
    per_class = torch.bincount(requested, weights=hit, minlength=num_classes)[:num_classes] / asked
    return float(hit.mean()), per_class  # 0 / 0 = NaN where a class was not asked for


def mode_coverage(predicted: Tensor, data_shares: Tensor) -> dict[str, Any]:
    """Class histogram of `predicted` [n] against the data's class shares [C] (summing to 1).

    Returns `shares` [C] (the samples' class distribution), `kl` = KL(samples || data) in nats (0 log 0 = 0;
    infinite if the samples hold a class the data lacks) and `missing`, the number of classes whose share
    is under half the data's.
    """
    data_shares = data_shares.double().cpu()
    counts = class_histogram(predicted, len(data_shares)).double()
    shares = counts / counts.sum()
    present = shares > 0
    kl = float((shares[present] * (shares[present] / data_shares[present]).log()).sum())
    missing = int((shares < MISSING_BELOW * data_shares).sum())
    return {"shares": shares, "kl": kl, "missing": missing}


def data_class_shares(datamodule: Any, split: str, num_classes: int) -> Tensor | None:
    """The class distribution [C] of a split of a labelled image datamodule (its dataset's `labels`); None for
    unlabelled data."""
    labels = getattr(getattr(datamodule, f"{split}_dataloader")().dataset, "labels", None)
    if labels is None or len(labels) == 0:
        return None
    counts = class_histogram(torch.as_tensor(labels), num_classes).double()
    return counts / counts.sum()


class ClassMetrics:
    """Conditional accuracy and mode coverage of uint8 samples under a genlab classifier checkpoint.

    Names follow FID's (`<metric>/<extractor label>/<n>`, e.g. `cond_acc/classifier-mnist5k/1000`):
    `cond_acc` (overall) and `cond_acc/class<c>` for conditional samples; `class_kl`, `missing_classes` and
    `class_share/class<c>` for any samples.
    """

    def __init__(
        self, weights_path: str | Path, label: str, batch_size: int = 200, data_split: str = "train"
    ):
        """
        Args:
            weights_path: a checkpoint of `genlab train experiment=mnist_classifier`.
            label: the extractor's name in metric names (`Fidelity.identity()[0]`, e.g. classifier-mnist5k).
            batch_size: images per classifier batch.
            data_split: the split whose class distribution coverage compares with.
        """
        from genlab.metrics.extractors import ClassifierFeatureExtractor

        self.extractor = ClassifierFeatureExtractor("classifier", ["logits"], str(weights_path))
        self.num_classes = int(self.extractor.net.num_classes)
        self.label = label
        self.batch_size = int(batch_size)
        self.data_split = data_split

    @torch.no_grad()
    def predict(self, samples: Tensor) -> Tensor:
        """The classifier's class [n] for each uint8 sample [n, C, H, W] (grey or RGB)."""
        from genlab.metrics.fidelity import SampleImages

        images = SampleImages(samples)
        out = []
        for start in range(0, len(samples), self.batch_size):
            batch = torch.stack([images[i] for i in range(start, min(start + self.batch_size, len(samples)))])
            (logits,) = self.extractor(batch)
            out.append(logits.argmax(dim=1))
        return torch.cat(out)

    def evaluate_samples(
        self, samples: Tensor, datamodule: Any, labels: Tensor | None = None
    ) -> dict[str, float]:
        """Mode coverage of `samples` (uint8) and, when `labels` (the classes asked for) are given, their
        conditional accuracy; {name: float}. Unlabelled data gets no coverage (nothing to compare with)."""
        if samples.dtype != torch.uint8:
            raise ValueError(f"expected uint8 samples, got {samples.dtype}")
        predicted = self.predict(samples)
        suffix = f"{self.label}/{len(samples)}"
        out: dict[str, float] = {}
        if labels is not None:
            mean, per_class = conditional_accuracy(predicted, labels, self.num_classes)
            out[f"cond_acc/{suffix}"] = mean
            out |= {f"cond_acc/class{c}/{suffix}": float(v) for c, v in enumerate(per_class) if v == v}
        data_shares = data_class_shares(datamodule, self.data_split, self.num_classes)
        if data_shares is None:
            return out
        coverage = mode_coverage(predicted, data_shares)
        out[f"class_kl/{suffix}"] = coverage["kl"]
        out[f"missing_classes/{suffix}"] = float(coverage["missing"])
        out |= {f"class_share/class{c}/{suffix}": float(v) for c, v in enumerate(coverage["shares"])}
        return out
