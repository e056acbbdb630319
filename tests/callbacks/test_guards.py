"""NonFiniteLossGuard: a NaN loss stops training with `non-finite loss at step N`, earlier checkpoints kept."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.guards import NonFiniteLossError, NonFiniteLossGuard
from genlab.errors import GenlabError


class Diverging(L.LightningModule):
    """A linear model whose loss turns NaN at step `nan_at`, returned or (manual optimisation) only logged."""

    def __init__(self, nan_at: int, manual: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.nan_at = nan_at
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if self.global_step >= self.nan_at:
            loss = loss * float("nan")
        if self.automatic_optimization:
            self.log("train/loss", loss)
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.log("train/d_loss", loss)
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module: L.LightningModule, root: Path) -> None:
    data = DataLoader(TensorDataset(torch.randn(32, 2)), batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=8, callbacks=[NonFiniteLossGuard(), checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, data)


@pytest.mark.parametrize("manual", [False, True], ids=["returned-loss", "logged-gan-loss"])
def test_nan_loss_stops_at_its_step_and_keeps_checkpoints(tmp_path: Path, manual: bool):
    with pytest.raises(
        NonFiniteLossError, match=r"^non-finite loss at step 3 \(train/(d_)?loss=nan\)"
    ) as err:
        fit(Diverging(nan_at=3, manual=manual), tmp_path)
    assert isinstance(err.value, GenlabError)  # the CLI prints it as one line and marks the run failed
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert kept == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]


def test_finite_loss_trains_to_the_end(tmp_path: Path):
    fit(Diverging(nan_at=10**6), tmp_path)
    assert len(list((tmp_path / "checkpoints").glob("*.ckpt"))) == 8
