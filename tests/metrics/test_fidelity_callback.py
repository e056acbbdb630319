"""FidelityCallback: evaluates every N validation epochs and at the end, and its metrics reach callback_metrics."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.fidelity import FidelityCallback
from genlab.errors import ConfigError
from tests.metrics.conftest import SHAPE, images01


class TinyGenerator(L.LightningModule):
    """An ImageGenerator whose samples are a learnt constant image plus noise (the loss pulls it to the data mean)."""

    def __init__(self):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(SHAPE))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.rand(n, *SHAPE, generator=generator) * 0.2
        return (torch.sigmoid(self.mean) + noise).clamp(0, 1)

    def training_step(self, batch, batch_idx):
        loss = ((torch.sigmoid(self.mean) - (batch[0] + 1) / 2) ** 2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", ((torch.sigmoid(self.mean) - (batch[0] + 1) / 2) ** 2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


class TinyImages(L.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.images = images01(32, seed=0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images * 2 - 1), batch_size=8)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images[:8] * 2 - 1), batch_size=8)

    def real_images(self, split: str = "train", n: int | None = None) -> Tensor:
        return self.images[:n]

    def fingerprint(self, split: str) -> str:
        return f"tiny-{split}"


def fit(callback: FidelityCallback, tmp_path: Path, max_epochs: int = 2) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="csv", version=0),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyGenerator(), datamodule=TinyImages())
    return trainer


def csv_rows(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def make(ckpt: Path, tmp_path: Path, **kw) -> FidelityCallback:
    options = dict(n_samples=16, batch_size=8, kid_subset_size=8, cache_dir=str(tmp_path / "cache"))
    return FidelityCallback("classifier", str(ckpt), **(options | kw))


def test_every_n_epochs_and_not_twice_at_the_end(classifier_ckpt, tmp_path, monkeypatch, caplog):
    callback = make(classifier_ckpt, tmp_path, every_n_epochs=1)
    steps = []
    evaluate = type(callback.metrics.fidelity).evaluate_samples
    monkeypatch.setattr(
        type(callback.metrics.fidelity),
        "evaluate_samples",
        lambda self, *a, **k: steps.append(1) or evaluate(self, *a, **k),
    )
    with caplog.at_level(logging.INFO, logger="genlab.callbacks.fidelity"):
        trainer = fit(callback, tmp_path, max_epochs=2)
    assert len(steps) == 2  # after each validation; the end of training coincides with the last one
    assert {"fid/classifier-toy/16", "kid/classifier-toy/16", "is/classifier-toy/16",
            "precision/classifier-toy/16", "recall/classifier-toy/16"} <= set(trainer.callback_metrics)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fidelity")]
    assert len(lines) == 2 and " s (reference features computed" in lines[0] and "cached" in lines[1]
    rows = csv_rows(tmp_path)
    assert sum(1 for row in rows if row.get("fid/classifier-toy/16")) == 2


def test_end_of_training_reaches_callback_metrics_and_loggers(classifier_ckpt, tmp_path):
    trainer = fit(make(classifier_ckpt, tmp_path, every_n_epochs=0, metrics=["fid"]), tmp_path, max_epochs=1)
    fid = float(trainer.callback_metrics["fid/classifier-toy/16"])
    assert fid > 0
    assert float(trainer.callback_metrics["fidelity_seconds/classifier-toy/16"]) > 0
    rows = csv_rows(tmp_path)
    assert [float(row["fid/classifier-toy/16"]) for row in rows if row.get("fid/classifier-toy/16")] == [
        pytest.approx(fid)
    ]


def test_missing_checkpoint_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="genlab train experiment=mnist_classifier") as error:
        fit(make(tmp_path / "missing.ckpt", tmp_path), tmp_path)
    assert str(tmp_path / "missing.ckpt") in str(error.value) and "\n" not in str(error.value)


def test_missing_checkpoint_with_if_missing_warn_trains_on_without_fid(tmp_path, caplog):
    missing = tmp_path / "classifiers" / "toy.ckpt"
    with caplog.at_level(logging.WARNING, logger="genlab.callbacks.fidelity"):
        trainer = fit(make(missing, tmp_path, if_missing="warn", every_n_epochs=1), tmp_path, max_epochs=1)
    assert trainer.state.finished and trainer.global_step == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"FID skipped: no classifier at {missing}; make it with `genlab train experiment=mnist_classifier`"
    ]
    assert not any(name.startswith(("fid/", "fidelity_seconds/")) for name in trainer.callback_metrics)


def test_if_missing_takes_error_or_warn():
    with pytest.raises(ConfigError, match="if_missing='skip'"):
        FidelityCallback(if_missing="skip")


def test_novelty_is_logged_beside_fid_from_the_same_samples(classifier_ckpt, tmp_path, monkeypatch):
    drawn = []
    sample = TinyGenerator.sample
    monkeypatch.setattr(
        TinyGenerator, "sample", lambda self, n, generator=None: drawn.append(n) or sample(self, n, generator)
    )
    callback = make(classifier_ckpt, tmp_path, every_n_epochs=0, metrics=["fid"], novelty=True)
    trainer = fit(callback, tmp_path, max_epochs=1)
    assert sum(drawn) == 16  # one draw of n_samples serves FID and novelty
    # the held-out split (TinyImages returns the same 32 images for any split) caps the novelty count at 16
    names = {"fid/classifier-toy/16", "novelty/copy_fraction/classifier-toy/16",
             "novelty/nn_dist_generated/classifier-toy/16", "novelty/nn_dist_heldout/classifier-toy/16"}  # fmt: skip
    assert names <= set(trainer.callback_metrics)
    row = [row for row in csv_rows(tmp_path) if row.get("fid/classifier-toy/16")][-1]
    assert 0 <= float(row["novelty/copy_fraction/classifier-toy/16"]) <= 1


def test_no_samples_turns_fid_off_without_needing_a_classifier(tmp_path, caplog):
    callback = make(tmp_path / "missing.ckpt", tmp_path, n_samples=0, every_n_epochs=1)  # if_missing=error
    with caplog.at_level(logging.INFO, logger="genlab.callbacks.fidelity"):
        trainer = fit(callback, tmp_path, max_epochs=1)
    assert trainer.state.finished
    ours = [r.getMessage() for r in caplog.records if r.name == "genlab.callbacks.fidelity"]
    assert ours == ["FID off (callbacks.fidelity.n_samples=0)"]
    assert not any(name.startswith(("fid/", "fidelity_seconds/")) for name in trainer.callback_metrics)
    with pytest.raises(ConfigError, match="n_samples=-1"):
        FidelityCallback(n_samples=-1)


@pytest.mark.parametrize("search", ["mnist_ddpm_optuna", "mnist_vae_optuna"])
def test_image_sweeps_leave_fid_off_unless_asked(search, tmp_path):
    from tests.test_configs import compose_train

    assert compose_train([f"hparams_search={search}"], tmp_path).callbacks.fidelity.n_samples == 0
    asked = compose_train([f"hparams_search={search}", "callbacks.fidelity.n_samples=1000"], tmp_path)
    assert asked.callbacks.fidelity.n_samples == 1000
