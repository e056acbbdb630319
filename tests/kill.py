"""A callback that SIGKILLs its own process at a chosen training step: how the resume tests interrupt a run.

Added from the command line (`+callbacks.kill._target_=tests.kill.KillAtStep +callbacks.kill.step=7`), so
the run under test is an ordinary `genlab train` process that dies the way a preempted job does.
"""

from __future__ import annotations

import io
import os
import signal

import lightning as L
import torch


class KillAtStep(L.Callback):
    def __init__(self, step: int, hook: str = "batch_end", sig: str = "SIGKILL", repeat: int = 1) -> None:
        self.step, self.hook, self.sig, self.repeat = int(step), hook, getattr(signal, sig), int(repeat)

    def _maybe_kill(self, trainer: L.Trainer, hook: str) -> None:
        if hook == self.hook and trainer.global_step >= self.step:
            for _ in range(self.repeat):  # repeat=2 with SIGINT: Ctrl-C pressed twice
                os.kill(os.getpid(), self.sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._maybe_kill(trainer, "batch_start")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._maybe_kill(trainer, "before_optimizer_step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_kill(trainer, "batch_end")

    def on_validation_end(self, trainer, pl_module) -> None:
        # after the monitored checkpoint of this validation was written (the checkpoint callback comes first)
        if not trainer.sanity_checking:
            self._maybe_kill(trainer, "validation_end")


class KillDuringSave(L.Callback):
    """From training step `step` on, the next checkpoint save writes half its bytes and SIGKILLs the process."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step < self.step or getattr(torch.save, "_kills", False):
            return
        original = torch.save

        def half_a_save(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            original(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        half_a_save._kills = True
        torch.save = half_a_save


class KillAfterSave(L.Callback):
    """From training step `step` on, SIGKILLs the process as soon as the next checkpoint is complete on disk:
    the rows of the checkpointed step are not logged yet."""

    def __init__(self, step: int) -> None:
        import genlab.checkpoints

        original, at = genlab.checkpoints.save_atomic, int(step)

        def save_then_die(obj, path):
            original(obj, path)
            if obj.get("global_step", 0) >= at:
                os.kill(os.getpid(), signal.SIGKILL)

        genlab.checkpoints.save_atomic = save_then_die
