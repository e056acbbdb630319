"""`log_diagnostics`: training values only the loggers read are logged on the steps whose row is written.

Lightning's `self.log` costs 0.3-1 ms a value on a CPU whether the value reaches a row or not; the VAE's
recon/kl and the GAN's d_acc/gp go through `log_diagnostics`, so they cost that only every
`log_every_n_steps` steps, and the CSV rows hold them exactly as before.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.validate_at_end import ValidateAtEnd
from genlab.models.vae import VAE
from genlab.nets.conv_vae import ConvVAE

SHAPE = (1, 8, 8)


def train(tmp_path: Path, logger: bool = True, max_steps: int = 7) -> tuple[VAE, L.Trainer, list[int]]:
    torch.manual_seed(0)
    vae = VAE(ConvVAE(SHAPE, 2, (4,), 8), optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    logged_at = []
    log_dict = vae.log_dict

    def counting(metrics, **kwargs):
        if "train/recon" in metrics:
            logged_at.append(vae.trainer.global_step)
        return log_dict(metrics, **kwargs)

    vae.log_dict = counting
    data = DataLoader(TensorDataset(torch.rand(40, *SHAPE) * 2 - 1, torch.zeros(40)), batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, log_every_n_steps=3, callbacks=[ValidateAtEnd()],
        logger=CSVLogger(tmp_path, name="csv", version="") if logger else False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(vae, data, data)
    return vae, trainer, logged_at


def test_every_written_row_holds_the_diagnostics_and_only_those_steps_log_them(tmp_path: Path):
    _, trainer, logged_at = train(tmp_path)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/loss")]
    assert [int(row["step"]) for row in rows] == [2, 5, 6]  # every 3rd step, and the last (max_steps)
    assert all(row["train/recon"] and row["train/kl"] for row in rows)
    assert logged_at == [2, 5, 6]
    assert {"train/recon", "train/kl"} <= set(trainer.callback_metrics)


def test_without_a_logger_every_step_logs_them(tmp_path: Path):
    _, trainer, logged_at = train(tmp_path, logger=False, max_steps=4)
    assert logged_at == [0, 1, 2, 3]
    assert {"train/recon", "train/kl"} <= set(trainer.callback_metrics)
