"""The private Lightning names genlab's resume relies on, checked against what Lightning really does.

`ResumePosition` and `LoggerContinuity` (genlab/callbacks/resume.py) read and set the epoch loop's
`_batches_that_stepped` and `_should_accumulate()`, and build a step's pending metrics row from the logger
connector's `metrics["log"]` and `should_update_logs`; `LastCheckpoint` calls `_save_none_monitor_checkpoint`.
Checked against Lightning 2.6: when one moves, these tests fail and name the version that moved it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from genlab.callbacks.resume import LoggerContinuity, ResumePosition

WHERE = f"lightning {L.__version__} (genlab was checked against 2.6)"


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        loss = (self.w * batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.arange(12.0)[:, None]), batch_size=2
        )

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class SaveAt(L.Callback):
    def __init__(self, step: int, path: Path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_the_private_names_exist():
    from lightning.pytorch.loops import _TrainingEpochLoop
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    assert callable(getattr(_TrainingEpochLoop, "_should_accumulate", None)), WHERE
    assert isinstance(getattr(_LoggerConnector, "should_update_logs", None), property), WHERE
    assert isinstance(getattr(_LoggerConnector, "metrics", None), property), WHERE
    assert callable(getattr(ModelCheckpoint, "_save_none_monitor_checkpoint", None)), WHERE


def test_a_checkpoint_at_a_steps_end_carries_the_row_lightning_logs_after_it(tmp_path: Path):
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=5, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
        callbacks=[ResumePosition(), LoggerContinuity(), SaveAt(3, tmp_path / "at3.ckpt")],
    )  # fmt: skip
    trainer.fit(Tiny())
    checkpoint = torch.load(tmp_path / "at3.ckpt", weights_only=True)
    (pending,) = checkpoint["genlab_pending_rows"]
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        logged = [row for row in csv.DictReader(f) if row["step"] == str(pending["step"])]
    assert len(logged) == 1, (WHERE, logged)
    assert {k: float(v) for k, v in pending.items()} == {k: float(v) for k, v in logged[0].items() if v}, (
        WHERE
    )
    # the logging step the next batch uses, which a resumed run is put back to
    assert checkpoint["callbacks"]["ResumePosition"] == {"next_logging_step": pending["step"] + 1}, WHERE
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 5, WHERE
