"""Shared pieces of the image-metric tests: a tiny classifier checkpoint, a tiny datamodule, toy generators."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.models.classifier import Classifier
from genlab.nets.classifier import ConvClassifier

SHAPE = (1, 8, 8)


def save_classifier(path: Path, seed: int = 0, trained_on: str | None = "toy") -> Path:
    """A randomly initialised classifier, saved the way `genlab train` does (its on_save_checkpoint hook)."""
    torch.manual_seed(seed)
    module = Classifier(ConvClassifier(SHAPE, num_classes=4, channels=(4, 8), feature_dim=6, dropout=0.0))
    checkpoint = {"state_dict": module.state_dict(), "epoch": 0}
    module.on_save_checkpoint(checkpoint)
    checkpoint["trained_on"] = trained_on
    torch.save(checkpoint, path)
    return path


@pytest.fixture
def classifier_ckpt(tmp_path: Path) -> Path:
    return save_classifier(tmp_path / "classifier.ckpt")


def images01(n: int, seed: int) -> Tensor:
    """`n` random images on the uint8 grid (k / 255), so converting them to uint8 loses nothing."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *SHAPE), generator=generator).float() / 255.0


class ToyData:
    """The datamodule surface the metrics use: a split's size, its first n images, its fingerprint."""

    def __init__(self, images: Tensor, name: str = "toy"):
        self.images, self.name = images, name
        self.real_calls = 0

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images), batch_size=16)

    def real_images(self, split: str = "train", n: int | None = None) -> Tensor:
        self.real_calls += 1
        return self.images[:n]

    def fingerprint(self, split: str) -> str:
        return f"{self.name}-{split}"


class RandomImages(nn.Module):
    """An ImageGenerator drawing uniform uint8-grid images from the caller's generator."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(0, 256, (n, *SHAPE), generator=generator).float() / 255.0


class Replay(nn.Module):
    """An ImageGenerator that hands back a fixed set of images, in order."""

    def __init__(self, images: Tensor):
        super().__init__()
        self.images, self.position = images, 0

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        out = self.images[self.position : self.position + n]
        self.position += n
        return out
