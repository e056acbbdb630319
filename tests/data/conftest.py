"""Writers for tiny datasets in the exact on-disk formats torchvision and image_folder read."""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

TinySet = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train images, labels, test images, labels


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, the type (0x08 = uint8), the number of dims, big-endian sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _random_set(n_train: int, n_test: int, shape: tuple[int, ...], seed: int) -> TinySet:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )


@pytest.fixture
def write_mnist() -> Callable[..., TinySet]:
    """`write_mnist(root, folder="MNIST", n_train=40, n_test=10)`: the four uncompressed idx-ubyte files
    under `root/<folder>/raw/`, where torchvision's MNIST/FashionMNIST look after extracting a download."""

    def write(root: Path, folder: str = "MNIST", n_train: int = 40, n_test: int = 10) -> TinySet:
        raw = root / folder / "raw"
        raw.mkdir(parents=True)
        train_x, train_y, test_x, test_y = data = _random_set(n_train, n_test, (28, 28), seed=0)
        _write_idx(raw / "train-images-idx3-ubyte", train_x)
        _write_idx(raw / "train-labels-idx1-ubyte", train_y)
        _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
        _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
        return data

    return write


@pytest.fixture
def write_cifar10(monkeypatch: pytest.MonkeyPatch) -> Callable[..., TinySet]:
    """`write_cifar10(root, per_batch=8, n_test=10)`: `root/cifar-10-batches-py/` with five data batches,
    `test_batch` and `batches.meta`, pickled dicts of uint8 rows (1024 R, 1024 G, 1024 B) as CIFAR ships
    them. torchvision checks each file's md5 against the real release, so the expected sums are swapped
    for those of these tiny files; everything else is torchvision's own reading."""
    from torchvision.datasets import CIFAR10

    def write(root: Path, per_batch: int = 8, n_test: int = 10) -> TinySet:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        train_x, train_y, test_x, test_y = data = _random_set(5 * per_batch, n_test, (3, 32, 32), seed=1)

        def dump(name: str, content: dict) -> list[str]:
            path = folder / name
            path.write_bytes(pickle.dumps(content))
            return [name, hashlib.md5(path.read_bytes()).hexdigest()]

        def batch(name: str, x: np.ndarray, y: np.ndarray) -> list[str]:
            return dump(name, {"batch_label": name, "labels": y.tolist(), "data": x.reshape(len(x), -1)})

        rows = [slice(i * per_batch, (i + 1) * per_batch) for i in range(5)]
        train_list = [batch(f"data_batch_{i + 1}", train_x[r], train_y[r]) for i, r in enumerate(rows)]
        test_list = [batch("test_batch", test_x, test_y)]
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        _, meta_md5 = dump("batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
        monkeypatch.setattr(CIFAR10, "train_list", train_list)
        monkeypatch.setattr(CIFAR10, "test_list", test_list)
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": meta_md5})
        return data

    return write


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every torchvision download fails like an offline machine; returns the URLs that were attempted."""
    from urllib.error import URLError

    import torchvision.datasets.cifar
    import torchvision.datasets.mnist

    attempts: list[str] = []

    def offline(url: str, *args, **kwargs) -> None:
        attempts.append(url)
        raise URLError("no network in tests")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    return attempts
