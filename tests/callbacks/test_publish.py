"""PublishCheckpoint: the best checkpoint lands at the fixed path (whole, atomically), gated on a final metric."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.publish import PublishCheckpoint


class Tiny(L.LightningModule):
    def __init__(self, acc: float):
        super().__init__()
        self.layer, self.acc = torch.nn.Linear(2, 1), acc

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())
        self.log("val/acc", self.acc)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path: Path, acc: float, target: Path) -> ModelCheckpoint:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/loss", save_top_k=1)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint, PublishCheckpoint(str(target), monitor="val/acc", min_value=0.9)],
    )
    trainer.fit(Tiny(acc), train_dataloaders=data, val_dataloaders=data)
    return checkpoint


def test_best_checkpoint_is_copied_to_the_fixed_path(tmp_path: Path):
    target = tmp_path / "cache" / "classifiers" / "toy.ckpt"
    checkpoint = fit(tmp_path, acc=0.95, target=target)
    assert target.read_bytes() == Path(checkpoint.best_model_path).read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["toy.ckpt"]  # no temporary file left behind
    assert "state_dict" in torch.load(target, weights_only=True)


def test_a_run_below_the_gate_leaves_the_published_checkpoint_alone(tmp_path: Path, caplog):
    target = tmp_path / "classifiers" / "toy.ckpt"
    target.parent.mkdir()
    target.write_bytes(b"the trained classifier")
    with caplog.at_level(logging.WARNING, logger="genlab.callbacks.publish"):
        fit(tmp_path, acc=0.3, target=target)
    assert target.read_bytes() == b"the trained classifier"
    assert any("val/acc=0.3" in r.getMessage() and str(target) in r.getMessage() for r in caplog.records)
