"""Image metrics (FID, KID, IS, precision/recall) of an ImageGenerator against a real split, via torch-fidelity.

Generated images go straight from `sample(n)` into torch-fidelity as in-memory uint8 tensors (no PNG round
trip); drawing them is apart from scoring them, so callers can draw across DDP ranks (metrics/sampling.py) or
reuse the same samples for the novelty statistics. The real split's
features are cached on disk by torch-fidelity under `cache_dir`, in an entry named by the split's
fingerprint (dataset, preprocessing, splits), the number of real images and the extractor's exact weights:
a second evaluation reuses them, and a change in any of these computes a fresh entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from genlab.errors import ConfigError
from genlab.metrics import extractors, sampling
from genlab.models.base import ImageGenerator

log = logging.getLogger(__name__)

# our metric names -> torch-fidelity's switches
METRICS = {"fid": "fid", "kid": "kid", "is": "isc", "pr": "prc"}
# bump when the way real images become extractor inputs changes, so old cache entries are not reused
CACHE_VERSION = "v1"


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images `[B, C, H, W]` in [0, 1] -> uint8 `[B, 3, H, W]`, torch-fidelity's input format (grey repeated)."""
    images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class RealImages(Dataset):
    """`n` real images as uint8 RGB; `load()` runs on first access only, so a cache hit never reads them."""

    def __init__(self, load: Callable[[], Tensor], n: int):
        self.load, self.n = load, n
        self.images: Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Tensor:
        if self.images is None:
            self.images = to_uint8_rgb(self.load())
        return self.images[index]


class SampleImages(Dataset):
    """Generated images, uint8 `[n, C, H, W]` (sampling.draw's output), as torch-fidelity's uint8 RGB input."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image = self.images[index]  # (C, H, W)
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class Fidelity:
    """FID / KID / IS / precision-recall of generators against one real split, with one feature extractor.

    Metric names carry the extractor and the sample count, e.g. `fid/classifier-mnist5k/5000`: values
    from different extractors or sample counts never share a name, so they are never compared.
    """

    def __init__(
        self,
        extractor: str = extractors.CLASSIFIER,
        weights_path: str | Path | None = None,
        n_samples: int = 5000,
        batch_size: int = 200,
        metrics: Sequence[str] = ("fid", "kid", "is", "pr"),
        real_split: str = "train",
        n_real: int | None = None,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        seed: int = 0,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        isc_splits: int = 10,
        prc_neighborhood: int = 3,
    ):
        """
        Args:
            extractor: `classifier` (a genlab classifier checkpoint; offline) or `inception-v3-compat`.
            weights_path: the classifier checkpoint, or a local copy of the Inception weights (None downloads
                them on first use).
            n_samples: generated images per evaluation.
            batch_size: images per sampling / feature batch.
            metrics: any of fid, kid, is (Inception Score), pr (precision/recall).
            real_split: the datamodule split the samples are compared with.
            n_real: real images compared; None takes min(n_samples, size of the split).
            cache_dir: where reference features are cached; None disables the cache.
            num_workers: loader workers for the real images: 0 reads them in-process (torch-fidelity's
                `save_cpu_ram`); any other value lets torch-fidelity start its own min(4, 2 x cores).
            seed: seeds the samples' generator and torch-fidelity's KID subsets / IS shuffle.
            kid_subsets, kid_subset_size: KID is averaged over this many subsets of this size (capped at the
                sample counts).
            isc_splits: the Inception Score's number of splits (capped at n_samples).
            prc_neighborhood: k of the k-NN balls in precision/recall.
        """
        if extractor not in extractors.EXTRACTORS:
            raise ConfigError(
                f"unknown feature extractor {extractor!r}: choose one of {', '.join(extractors.EXTRACTORS)}"
            )
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown or not metrics:
            raise ConfigError(f"metrics={list(metrics)}: choose one or more of {', '.join(METRICS)}")
        if int(n_samples) < 2:
            raise ConfigError(f"n_samples={n_samples} must be at least 2")
        self.extractor = extractor
        self.weights_path = None if weights_path is None else str(Path(weights_path).expanduser())
        self.n_samples = int(n_samples)
        self.batch_size = int(batch_size)
        self.metrics = tuple(metrics)
        self.real_split = real_split
        self.n_real = None if n_real is None else int(n_real)
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser() / "fidelity"
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.kid_subsets = int(kid_subsets)
        self.kid_subset_size = int(kid_subset_size)
        self.isc_splits = int(isc_splits)
        self.prc_neighborhood = int(prc_neighborhood)
        self._identity: tuple[str, str] | None = None
        self._identity_key: tuple[int, int] | None = None
        self.last_reference_cached: bool | None = None  # whether the last evaluate() found the cache entry

    # ---------------------------------------------------------------- names and keys
    def identity(self) -> tuple[str, str]:
        """(label, weights id): `classifier-mnist5k` or `inception-v3-compat`, and a hash of the weights."""
        # the weights file is re-read only when it changes (a classifier retrained into the same path)
        stat = (
            Path(self.weights_path).stat()
            if self.weights_path and Path(self.weights_path).is_file()
            else None
        )
        key = None if stat is None else (stat.st_mtime_ns, stat.st_size)
        if self._identity is None or key != self._identity_key:
            self._identity_key = key
            weights = extractors.weights_id(self.extractor, self.weights_path)
            label = self.extractor
            if self.extractor == extractors.CLASSIFIER:
                _, meta = extractors.load_classifier(self.weights_path)
                label = f"classifier-{meta['trained_on']}" if meta.get("trained_on") else label
            self._identity = (label, weights)
        return self._identity

    def cache_name(self, fingerprint: str, n_real: int) -> str:
        """torch-fidelity's cache entry of the reference features: every key part that changes them."""
        _, weights = self.identity()
        return f"genlab-{CACHE_VERSION}-{fingerprint}-n{n_real}-{self.extractor}-{weights}"

    def names(self) -> dict[str, str]:
        """torch-fidelity's result keys -> our metric names."""
        label, _ = self.identity()
        suffix = f"{label}/{self.n_samples}"
        out = {}
        if "fid" in self.metrics:
            out["frechet_inception_distance"] = f"fid/{suffix}"
        if "kid" in self.metrics:
            out |= {
                "kernel_inception_distance_mean": f"kid/{suffix}",
                "kernel_inception_distance_std": f"kid_std/{suffix}",
            }
        if "is" in self.metrics:
            out |= {"inception_score_mean": f"is/{suffix}", "inception_score_std": f"is_std/{suffix}"}
        if "pr" in self.metrics:
            out |= {"precision": f"precision/{suffix}", "recall": f"recall/{suffix}"}
        return out

    # ---------------------------------------------------------------- evaluation
    def sample(self, model: ImageGenerator, labels: Tensor | None = None) -> Tensor:
        """`n_samples` samples of `model` (uint8 `[n, C, H, W]`, CPU), from a generator seeded with `seed`;
        `labels` [n_samples]: the classes a conditional model is asked for."""
        generator = torch.Generator().manual_seed(self.seed)
        return sampling.draw(model, self.n_samples, self.batch_size, generator, labels)

    def evaluate(self, model: ImageGenerator, datamodule: Any) -> dict[str, float]:
        """Metrics of `model`'s samples against `datamodule`'s real split, as {name: float}.

        `datamodule` needs `real_images(split, n)` and `fingerprint(split)` (genlab's ImageDataModule).
        """
        cuda = torch.device(getattr(model, "device", "cpu")).type == "cuda"
        return self.evaluate_samples(self.sample(model), datamodule, cuda=cuda)

    def evaluate_samples(self, samples: Tensor, datamodule: Any, cuda: bool = False) -> dict[str, float]:
        """Metrics of already drawn samples (uint8 `[n_samples, C, H, W]`) against `datamodule`'s real split;
        `cuda` runs the feature extractor on the GPU."""
        import torch_fidelity

        if len(samples) != self.n_samples or samples.dtype != torch.uint8:
            raise ValueError(f"expected {self.n_samples} uint8 samples, got {len(samples)} {samples.dtype}")
        extractors.register_classifier()
        split_size = len(getattr(datamodule, f"{self.real_split}_dataloader")().dataset)
        n_real = min(self.n_samples, split_size) if self.n_real is None else self.n_real
        if "pr" in self.metrics and min(self.n_samples, n_real) <= self.prc_neighborhood:
            raise ConfigError(
                f"precision/recall with prc_neighborhood={self.prc_neighborhood} needs more than that many images "
                f"(n_samples={self.n_samples}, real={n_real}): raise n_samples or drop `pr` from metrics"
            )
        real = RealImages(lambda: datamodule.real_images(self.real_split, n_real), n_real)
        cache_name = self.cache_name(datamodule.fingerprint(self.real_split), n_real)
        self.last_reference_cached = self.cache_dir is not None and any(
            self.cache_dir.glob(f"{cache_name}-*")
        )
        results = torch_fidelity.calculate_metrics(
            input1=SampleImages(samples),
            input2=real,
            input2_cache_name=cache_name,
            cache=self.cache_dir is not None,
            cache_root=None if self.cache_dir is None else str(self.cache_dir),
            feature_extractor=self.extractor,
            feature_extractor_weights_path=self.weights_path,
            cuda=cuda,
            batch_size=self.batch_size,
            save_cpu_ram=self.num_workers == 0,
            rng_seed=self.seed,
            kid_subsets=self.kid_subsets,
            kid_subset_size=min(self.kid_subset_size, self.n_samples, n_real),
            isc_splits=min(self.isc_splits, self.n_samples),
            prc_neighborhood=self.prc_neighborhood,
            verbose=False,
            **{METRICS[m]: True for m in self.metrics},
        )
        return {name: float(results[key]) for key, name in self.names().items()}
