"""Novelty: are generated images new, or near-copies of training images?

For N generated images, the distance to the nearest training image, set against the same distance for N
held-out real images (which the model never saw). Distances are Euclidean, in a feature space: a genlab
classifier's penultimate features (the `classifier` extractor of metrics/extractors.py) or, without one,
raw pixels in [0, 1].

Names below are `novelty_metrics`'s; `Novelty` appends the feature space and the count to each.

- `novelty/nn_dist_generated`, `novelty/nn_dist_heldout`: the mean nearest-training-image distance of
  each set. A generator that memorises sits well below the held-out value.
- `novelty/copy_fraction`: the fraction of generated images closer to their nearest training image than
  the closest of all held-out images is (below the minimum held-out distance). Held-out images are, by
  construction, not copies, so this counts samples nearer to the training set than any fresh real image
  ever gets: ~0 for a model that generalises, ~1 for one that replays its training set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genlab.models.base import ImageGenerator

Features = Callable[[Tensor], Tensor]  # images (B, C, H, W) in [0, 1] -> (B, D)


def nearest_distances(queries: Tensor, reference: Tensor, chunk_size: int = 1024) -> Tensor:
    """Euclidean distance from each row of `queries` (N, D) to its nearest row of `reference` (M, D): (N,).

    Computed in chunks of both sets, so memory stays at chunk_size x chunk_size distances.
    """
    queries, reference = queries.flatten(1).double(), reference.flatten(1).double()
    best = torch.full((len(queries),), float("inf"), dtype=torch.float64)
    for i in range(0, len(queries), chunk_size):
        q = queries[i : i + chunk_size]
        for j in range(0, len(reference), chunk_size):
            # the direct (not matrix-multiply) form: exact zeros for exact copies
            d = torch.cdist(q, reference[j : j + chunk_size], compute_mode="donot_use_mm_for_euclid_dist")
            best[i : i + chunk_size] = torch.minimum(best[i : i + chunk_size], d.min(dim=1).values)
    return best


def novelty_metrics(
    generated: Tensor, heldout: Tensor, train: Tensor, chunk_size: int = 1024
) -> dict[str, float]:
    """The novelty metrics of generated vs held-out features (N, D), both measured against train features."""
    gen = nearest_distances(generated, train, chunk_size)
    held = nearest_distances(heldout, train, chunk_size)
    return {
        "novelty/nn_dist_generated": float(gen.mean()),
        "novelty/nn_dist_heldout": float(held.mean()),
        "novelty/copy_fraction": float((gen < held.min()).double().mean()),
    }


def pixel_features(images: Tensor) -> Tensor:
    """Raw pixels as features: (B, C, H, W) in [0, 1] -> (B, C*H*W)."""
    return images.float().flatten(1)


def classifier_features(weights_path: str | Path) -> Features:
    """The penultimate features of a genlab classifier checkpoint, on images seen as torch-fidelity sees them."""
    from genlab.metrics.extractors import ClassifierFeatureExtractor
    from genlab.metrics.fidelity import to_uint8_rgb

    extractor = ClassifierFeatureExtractor("classifier", ["features"], str(weights_path))

    @torch.no_grad()
    def features(images: Tensor) -> Tensor:
        (out,) = extractor(to_uint8_rgb(images.cpu()))
        return out

    return features


class Novelty:
    """Novelty metrics of an ImageGenerator against a datamodule's train split, with its test split as the yardstick.

    Metric names carry the feature space and the count, like the FID names: `novelty/copy_fraction/
    classifier-mnist5k/500` (or `.../pixels/500`).
    """

    def __init__(
        self,
        weights_path: str | Path | None = None,
        n_samples: int = 500,
        batch_size: int = 200,
        heldout_split: str = "test",
        seed: int = 0,
        chunk_size: int = 1024,
    ):
        """
        Args:
            weights_path: a classifier checkpoint whose features are compared; None compares raw pixels.
            n_samples: generated images, and held-out images (capped at the held-out split's size).
            batch_size: images per sampling / feature batch.
            heldout_split: the real images the model did not train on.
            seed: seeds the samples' generator.
            chunk_size: rows per block of the distance computation (memory ~ chunk_size^2).
        """
        self.weights_path = weights_path
        self.n_samples = int(n_samples)
        self.batch_size = int(batch_size)
        self.heldout_split = heldout_split
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)
        self.features: Features = classifier_features(weights_path) if weights_path else pixel_features
        self.label = "pixels"
        if weights_path:
            from genlab.metrics.extractors import load_classifier

            trained_on = load_classifier(weights_path)[1].get("trained_on")
            self.label = f"classifier-{trained_on}" if trained_on else "classifier"

    def _features(self, images: Tensor) -> Tensor:
        return torch.cat(
            [self.features(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        )

    @torch.no_grad()
    def evaluate(self, model: ImageGenerator, datamodule: Any) -> dict[str, float]:
        """Novelty of `model`'s samples; `datamodule` needs `real_images(split, n)` (genlab's ImageDataModule)."""
        n = min(self.n_samples, len(datamodule.real_images(self.heldout_split)))
        generator = torch.Generator().manual_seed(self.seed)
        samples = [
            model.sample(min(self.batch_size, n - i), generator=generator).cpu()
            for i in range(0, n, self.batch_size)
        ]
        return self.evaluate_samples(torch.cat(samples), datamodule)

    @torch.no_grad()
    def evaluate_samples(self, samples: Tensor, datamodule: Any) -> dict[str, float]:
        """Novelty of already drawn samples (`[N, C, H, W]`, floats in [0, 1] or uint8); the first
        min(n_samples, N, held-out split size) of them are compared."""
        if samples.dtype == torch.uint8:
            samples = samples.float() / 255.0
        heldout = datamodule.real_images(self.heldout_split)
        n = min(self.n_samples, len(samples), len(heldout))
        generated = self._features(samples[:n])
        train = self._features(datamodule.real_images("train"))
        metrics = novelty_metrics(generated, self._features(heldout[:n]), train, self.chunk_size)
        return {f"{name}/{self.label}/{n}": value for name, value in metrics.items()}
