"""Classifier family: shapes, learning a toy task, the shift augmentation, and the checkpoint the metrics reload."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from genlab.metrics.extractors import load_classifier
from genlab.models.classifier import Classifier
from genlab.nets.classifier import ConvClassifier

SHAPE = (1, 8, 8)


def quadrants(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k is a bright 4x4 quadrant k on noise, in [-1, 1]: learnable in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=generator)
    x = torch.rand(n, *SHAPE, generator=generator) * 0.6 - 1.0
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.2
    return x.clamp(-1, 1), y


class Quadrants(L.LightningDataModule):
    dataset = "quadrants"  # what the classifier checkpoint records as `trained_on`

    def train_dataloader(self):
        return DataLoader(TensorDataset(*quadrants(256, 0)), batch_size=32, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*quadrants(64, 1)), batch_size=64)

    def test_dataloader(self):
        return DataLoader(TensorDataset(*quadrants(64, 2)), batch_size=64)


def make(seed: int = 0, max_shift: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = ConvClassifier(SHAPE, num_classes=4, channels=(8, 16), feature_dim=16, dropout=0.1)
    return Classifier(net, max_shift=max_shift, optimizer=functools.partial(torch.optim.Adam, lr=3e-3))


def test_net_shapes_for_any_image_size():
    net = ConvClassifier((1, 28, 28), num_classes=10, channels=(4, 8, 8), feature_dim=12)
    x = torch.randn(3, 1, 28, 28)
    assert net.features(x).shape == (3, 12)
    assert net(x).shape == (3, 10)
    assert net(torch.randn(2, 1, 13, 13)).shape == (2, 10)  # global average: odd sizes work too


def test_shift_moves_whole_pixels_and_repeats_edges():
    module = make(max_shift=2)
    x = torch.randn(16, 1, 8, 8)
    torch.manual_seed(3)
    shifted = module.shift(x)
    torch.manual_seed(3)
    pixels = torch.randint(-2, 3, (16, 2))
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for i, (dx, dy) in enumerate(pixels.tolist()):
        expected = padded[i, :, 2 - dy : 10 - dy, 2 - dx : 10 - dx]
        torch.testing.assert_close(shifted[i], expected)
    assert make(max_shift=0).shift(x) is x


def test_learns_and_logs_accuracy(tmp_path):
    module = make(max_shift=1)
    trainer = L.Trainer(
        max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    data = Quadrants()
    trainer.fit(module, datamodule=data)
    assert float(trainer.callback_metrics["val/acc"]) > 0.9
    assert {"train/loss", "val/loss"} <= set(trainer.callback_metrics)
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    assert result["test/acc"] > 0.9


def test_checkpoint_reloads_with_weights_only(tmp_path):
    module = make()
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="last")],
    )  # fmt: skip
    trainer.fit(module, datamodule=Quadrants())
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["net_config"] == module.net.config and checkpoint["trained_on"] == "quadrants"

    fresh = make(seed=1)
    fresh.load_state_dict(checkpoint["state_dict"])
    module.eval(), fresh.eval()
    x, _ = quadrants(8, 5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), module(x))
        net, meta = load_classifier(tmp_path / "last.ckpt")  # the feature extractor's loader
        torch.testing.assert_close(net.features(x), module.net.features(x))
    assert meta["trained_on"] == "quadrants"


@pytest.mark.parametrize("bad", ["missing", "not a checkpoint"])
def test_bad_classifier_checkpoint_is_one_clear_error(bad, tmp_path):
    from genlab.errors import CheckpointError

    path = tmp_path / "model.ckpt"
    if bad == "not a checkpoint":
        path.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="classifier checkpoint"):
        load_classifier(path)
