"""Preemption in-process: a requeue signal that a launcher (submitit) listens for is handed on after the
checkpoint is saved; the kill-and-resume tests in tests/test_resume.py cover SIGTERM end to end."""

from __future__ import annotations

import os
import signal

import lightning as L
import pytest
import torch

from genlab.callbacks.resume import Preemption, RunInterrupted


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGUSR2)  # what SLURM sends submitit before the time limit
        return (self.w * batch[0]).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(20, 1)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_requeue_signal_saves_a_checkpoint_then_runs_the_launchers_handler(tmp_path):
    calls = []

    def launcher_handler(signum, frame):  # stands in for submitit's checkpoint-and-requeue
        calls.append((signum, (tmp_path / "last.ckpt").is_file()))

    previous = signal.signal(signal.SIGUSR2, launcher_handler)
    try:
        trainer = L.Trainer(
            accelerator="cpu", max_steps=8, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
            enable_model_summary=False, callbacks=[Preemption(str(tmp_path))],
        )  # fmt: skip
        with pytest.raises(RunInterrupted) as stopped:
            trainer.fit(Tiny())
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [(signal.SIGUSR2, True)]  # once, after the checkpoint was on disk
    assert stopped.value.step == 4 and stopped.value.exit_code == 128 + signal.SIGUSR2
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4


def test_without_a_listener_the_requeue_signal_is_left_alone(tmp_path):
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        trainer = L.Trainer(
            accelerator="cpu", max_steps=8, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
            enable_model_summary=False, callbacks=[Preemption(str(tmp_path))],
        )  # fmt: skip
        trainer.fit(Tiny())  # SIGUSR2 ignored: training runs to the end
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert trainer.global_step == 8 and not (tmp_path / "last.ckpt").exists()
