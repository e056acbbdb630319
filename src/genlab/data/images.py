"""`ImageDataModule`: any image dataset genlab reads, as in-memory tensors with seeded splits and resumable shuffling.

Images are decoded and preprocessed once (channels, centre-crop + resize) into uint8 tensors; a batch is one
tensor index plus a cast to float in `value_range`, so there is no per-image Python work while training.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genlab.data import image_sources
from genlab.data.sampling import ResumableRandomSampler
from genlab.errors import CheckpointError, DataError

SPLITS = ("train", "val", "test")


class InMemoryImages(Dataset):
    """uint8 images `[N, C, H, W]` and long labels `[N]`; items come out as floats in `value_range`."""

    def __init__(self, images: Tensor, labels: Tensor, value_range: tuple[float, float]) -> None:
        self.images = images
        self.labels = labels
        low, high = value_range
        self.scale, self.offset = (high - low) / 255.0, low

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index].float() * self.scale + self.offset, self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # the DataLoader hands over a whole batch of indices: one gather instead of B item calls
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index].float() * self.scale + self.offset, self.labels[index]


def _batch_as_is(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """`__getitems__` already returns a batch; a module-level function so worker processes can pickle it."""
    return batch


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders over one image dataset, preprocessed once into memory.

    Args:
        dataset: one of mnist5k, digits (offline), mnist, fashion_mnist, cifar10 (torchvision, downloaded
            into `root` on first use), image_folder (every PNG/JPEG under `root`, labelled by sub-folder).
        root: where torchvision datasets live / download to, or the image folder.
        image_shape: (channels, height, width) after preprocessing: grey <-> RGB conversion, then a
            centre crop to the target aspect and a resize. Channels must be 1 or 3.
        value_range: (low, high) of pixel values in batches.
        splits: fractions that sum to 1, drawn from a permutation seeded by `split_seed`: (train, val, test), or
            (train, val) of the official train set for torchvision datasets, whose test split is the
            official test set. None picks (0.8, 0.1, 0.1) or (0.9, 0.1).
        batch_size: images per batch; train batches are all full-size (the ragged last one is dropped)
            whenever the train split holds at least one batch, so BatchNorm never sees a batch of one.
        num_workers: DataLoader workers; 0 (the default) is fastest for in-memory tensors and keeps the
            resume position exact (workers fetch ahead of training).
        max_samples: keep only this many images of each source set (chosen by the seeded permutation,
            so still a mix of classes), for quick runs.
        seed: seeds the train sampler's own generator (the order of batches).
        split_seed: draws the splits; kept apart from `seed` so that runs with different seeds are
            trained and evaluated on the same images and their metrics compare.
        classes: keep only images with these labels, in every split, after splitting (fine-tuning on one
            digit): a subset's val/test images are the full dataset's val/test images of those classes.
            Labels keep their ids and `num_classes` stays the dataset's. None keeps every image.
    """

    def __init__(
        self,
        dataset: str = "mnist5k",
        root: str | Path = "data",
        image_shape: Sequence[int] = (1, 28, 28),
        value_range: Sequence[float] = (-1.0, 1.0),
        splits: Sequence[float] | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        max_samples: int | None = None,
        seed: int = 42,
        split_seed: int = 0,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if dataset not in image_sources.DATASETS:
            raise DataError(
                f"unknown data.dataset={dataset!r}: choose one of {', '.join(image_sources.DATASETS)}"
            )
        self.dataset = dataset
        self.root = Path(str(root)).expanduser()
        self.image_shape = _check_image_shape(image_shape)
        self.value_range = _check_value_range(value_range)
        self.has_official_test = dataset in image_sources.TORCHVISION
        self.splits = _check_splits(splits, dataset, self.has_official_test)
        if int(batch_size) < 1:
            raise DataError(f"data.batch_size={batch_size} must be at least 1")
        if max_samples is not None and int(max_samples) < 1:
            raise DataError(f"data.max_samples={max_samples} must be at least 1, or null to keep every image")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.seed = int(seed)
        self.split_seed = int(split_seed)
        self.classes = _check_classes(classes)
        self.num_classes: int | None = None  # known once setup() has read the data
        self.data: dict[str, InMemoryImages] = {}
        self.split_indices: dict[str, Tensor] = {}  # positions in the source set (official test set for test)
        self.sampler: ResumableRandomSampler | None = None
        self._pending_state: dict[str, Any] | None = None

    # ---------------------------------------------------------------- reading
    def prepare_data(self) -> None:
        """Download (torchvision datasets, first use only); Lightning calls this on one process per node."""
        if not self.data:
            image_sources.download(self.dataset, self.root)

    def setup(self, stage: str | None = None) -> None:
        """Read, split and preprocess every split once; later calls (fit, then test) reuse the tensors."""
        if self.data:
            return
        pool, official_test = image_sources.load(self.dataset, self.root, self.image_shape)
        generator = torch.Generator().manual_seed(self.split_seed)
        order = _cap(torch.randperm(len(pool), generator=generator), self.max_samples)
        sizes = self._split_sizes(len(order))
        parts = dict(zip(SPLITS, torch.split(order, sizes), strict=False))
        sources = dict.fromkeys(parts, pool)
        if official_test is not None:
            if self.max_samples is None:
                parts["test"] = torch.arange(len(official_test))  # the official set, in its own order
            else:
                parts["test"] = torch.randperm(len(official_test), generator=generator)[: self.max_samples]
            sources["test"] = official_test
        if self.classes is not None:
            parts = self._keep_classes(parts, sources, pool.num_classes)
        data = {}  # filled completely before it is published: a bad file leaves the module unset
        for split, indices in parts.items():
            images = sources[split].take(indices)
            data[split] = InMemoryImages(images, sources[split].labels[indices], self.value_range)
        self.data, self.split_indices = data, parts
        self.num_classes = pool.num_classes
        # drawn from `seed` through a generator, so seed == split_seed does not replay the split permutation
        sampler_seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(self.seed)))
        self.sampler = ResumableRandomSampler(len(self.data["train"]), sampler_seed)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)

    def _keep_classes(
        self, parts: dict[str, Tensor], sources: dict[str, image_sources.ImageSource], num_classes: int
    ) -> dict[str, Tensor]:
        """Each split's positions whose label is one of `classes`: filtered after the split, so the split
        an image falls in does not depend on which classes are kept."""
        if num_classes == 0:
            raise DataError(
                f"data.classes={list(self.classes)}: {self.dataset} at {self.root} has no labels (images "
                "in sub-folders are labelled by folder): remove data.classes"
            )
        unknown = [c for c in self.classes if not 0 <= c < num_classes]
        if unknown:
            raise DataError(
                f"data.classes={list(self.classes)}: {self.dataset} has no class {unknown[0]} "
                f"(its labels are 0 to {num_classes - 1})"
            )
        wanted = torch.tensor(self.classes)
        kept = {}
        for split, indices in parts.items():
            kept[split] = indices[torch.isin(sources[split].labels[indices], wanted)]
            if len(kept[split]) == 0:
                raise DataError(
                    f"data.classes={list(self.classes)} leaves the {split} split of {self.dataset} empty "
                    f"({len(indices)} images, max_samples={self.max_samples}): use more images or other classes"
                )
        return kept

    def _split_sizes(self, total: int) -> list[int]:
        counts = [round(fraction * total) for fraction in self.splits[1:]]
        counts.insert(0, total - sum(counts))
        for split, count in zip(SPLITS, counts, strict=False):
            if count < 1:
                raise DataError(
                    f"data.splits={list(self.splits)} leaves the {split} split empty with {total} images "
                    f"({self.dataset}, max_samples={self.max_samples}): raise its fraction or use more images"
                )
        return counts

    # ---------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        train = self._split("train")
        return DataLoader(
            train,
            batch_size=self.batch_size,
            sampler=self.sampler,
            drop_last=len(train) >= self.batch_size,
            collate_fn=_batch_as_is,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._ordered_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._ordered_loader("test")

    def _ordered_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self._split(split),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=_batch_as_is,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _split(self, split: str) -> InMemoryImages:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if not self.data:
            self.setup()
        return self.data[split]

    # ---------------------------------------------------------------- what others read
    def runtime_info(self) -> dict[str, Any]:
        """Values models interpolate as `${runtime.*}`: known for certain only after the data is read."""
        if self.num_classes is None:
            self.setup()
        return {"image_shape": list(self.image_shape), "num_classes": self.num_classes}

    def real_images(self, split: str = "test", n: int | None = None) -> Tensor:
        """The first `n` images (all if None) of a split as float `[n, C, H, W]` in [0, 1], for metrics."""
        images = self._split(split).images
        if n is not None:
            if n > len(images):
                raise DataError(
                    f"asked for {n} real {split} images but the {split} split of {self.dataset} has "
                    f"{len(images)}: lower the sample count or change data.splits / data.max_samples"
                    + (f" / data.classes={list(self.classes)}" if self.classes is not None else "")
                )
            images = images[:n]
        return images.float() / 255.0

    def fingerprint(self, split: str) -> str:
        """Names the exact images of a split (dataset, root, preprocessing, split_seed, splits): a cache key."""
        spec = {
            "dataset": self.dataset,
            "root": str(self.root.resolve()) if self.dataset == "image_folder" else None,
            "image_shape": list(self.image_shape),
            "splits": list(self.splits),
            "max_samples": self.max_samples,
            "split_seed": self.split_seed,
            "split": split,
        }
        if self.classes is not None:  # only when set: keys of the full dataset stay what they were
            spec["classes"] = list(self.classes)
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.dataset}-{split}-{'x'.join(map(str, self.image_shape))}-{digest}"

    # ---------------------------------------------------------------- resumable state
    def state_dict(self) -> dict[str, Any]:
        """The train sampler's generator state, epoch and in-epoch position (Lightning checkpoints this)."""
        return {} if self.sampler is None else {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "sampler" not in state_dict:
            return
        if self.sampler is None:  # restored before setup(): apply once the data is read
            self._pending_state = state_dict
            return
        self._pending_state = None
        try:
            self.sampler.load_state_dict(state_dict["sampler"])
        except ValueError as err:
            raise CheckpointError(
                f"the checkpoint's data state does not fit this data ({err}): resume with the same data config "
                f"(dataset, splits, max_samples, seed, split_seed) as the run that wrote it"
            ) from err


def _cap(order: Tensor, max_samples: int | None) -> Tensor:
    return order if max_samples is None else order[:max_samples]


def _check_classes(classes: Sequence[int] | int | None) -> tuple[int, ...] | None:
    if classes is None:
        return None
    values = [classes] if isinstance(classes, int) else classes
    if isinstance(values, str) or not all(isinstance(c, int) and not isinstance(c, bool) for c in values):
        raise DataError(f"data.classes={classes!r} must be a list of integer labels, e.g. [3] or [0, 1]")
    if not values:
        raise DataError("data.classes=[] keeps no image: list the labels to keep, or null to keep all")
    return tuple(sorted({int(c) for c in values}))


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 1:
        raise DataError(
            f"data.image_shape={list(shape)} must be [channels, height, width] with channels 1 (grey) "
            f"or 3 (RGB), e.g. [1, 28, 28] or [3, 32, 32]"
        )
    return shape  # type: ignore[return-value]


def _check_value_range(value_range: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(v) for v in value_range)
    if len(values) != 2 or not values[0] < values[1]:
        raise DataError(f"data.value_range={list(values)} must be [low, high] with low < high, e.g. [-1, 1]")
    return values  # type: ignore[return-value]


def _check_splits(splits: Sequence[float] | None, dataset: str, has_official_test: bool) -> tuple[float, ...]:
    expected = 2 if has_official_test else 3
    if splits is None:
        return (0.9, 0.1) if has_official_test else (0.8, 0.1, 0.1)
    fractions = tuple(float(v) for v in splits)
    if len(fractions) != expected:
        what = (
            "[train, val] of the official train set (the official test set is the test split)"
            if has_official_test
            else "[train, val, test]"
        )
        raise DataError(f"data.splits={list(fractions)} for {dataset} must be {expected} fractions {what}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise DataError(
            f"data.splits={list(fractions)} must sum to 1 (they sum to {sum(fractions):g}): adjust the fractions"
        )
    for split, fraction in zip(SPLITS, fractions, strict=False):
        if fraction <= 0:
            raise DataError(
                f"data.splits={list(fractions)} leaves the {split} split empty: give it a fraction above 0"
            )
    return fractions
