"""What a resumed run needs beyond Lightning's checkpoint: per-step random streams, and a checkpoint on signals.

Lightning's checkpoints hold weights, optimiser, scheduler, loop counters and the datamodule's `state_dict`
(genlab's samplers keep their own generator and in-epoch position there), but no random-number state. Rather
than saving the global generators' states at some hook and hoping the resumed run consumes random numbers in
the same order around it (it does not: a new DataLoader iterator draws a seed, for one), `StepSeed` reseeds
torch, numpy and python at the start of every training batch from (seed, epoch, batch, rank). The randomness
of a step is then a function of where the run is, which the checkpoint holds exactly, and a resumed run draws
the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import random
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 63-bit seed for one training step of one rank, well mixed so neighbouring steps are unrelated."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{batch_idx}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class StepSeed(L.Callback):
    """Reseed torch (every device), numpy and python before each training batch; `genlab train` always adds it."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        value = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(value)  # seeds CUDA's generators too
        np.random.seed(value % 2**32)
        random.seed(value)


class RunInterrupted(BaseException):
    """A signal stopped training after a checkpoint was saved; `genlab train` records the run as interrupted
    and exits with the signal's conventional status (128 + its number).

    Not an Exception, so no `except Exception` on the way (Hydra's, a sweep's) mistakes it for a failure.
    """

    def __init__(self, signame: str, step: int, checkpoint: str | None) -> None:
        super().__init__(f"{signame} at step {step}")
        self.signame = signame
        self.step = step
        self.checkpoint = checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + int(signal.Signals[self.signame])


class Preemption(L.Callback):
    """On SIGTERM, SIGUSR1 (SLURM's warning before a time limit or preemption) or a first Ctrl-C: finish the
    current step, save `checkpoints/last.ckpt`, and stop with `RunInterrupted`. A second Ctrl-C stops at once.

    Signals only set a flag; the checkpoint is written between steps, where the state is consistent. Under
    DDP the ranks agree on the flag at each step (one tiny broadcast), so all of them stop at the same step.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
    # submitit's requeue signal: taken over only where submitit (or another Python handler) listens for it,
    # whose handler then runs once the checkpoint is saved (submitit requeues the job, which resumes with
    # resume=auto_or_new)
    HANDED_ON = ("SIGUSR2",)

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._received: str | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its own handlers (just before training starts); they come back at teardown
        for name in self.SIGNALS + self.HANDED_ON:
            signum = getattr(signal, name, None)
            if signum is None or (name in self.HANDED_ON and not callable(signal.getsignal(signum))):
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay with whoever owns them
                return

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self._received = name
        log.warning(
            f"received {name}: saving a checkpoint after this step, then stopping"
            + (" (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop._should_accumulate():
            return  # between the micro-batches of one optimiser step: their gradients are in no checkpoint
        received = self._received
        if trainer.world_size > 1:
            received = trainer.strategy.broadcast(received, src=0)
        if received is None:
            return
        trainer.save_checkpoint(self.path)
        log.warning(f"checkpoint saved at step {trainer.global_step}: {self.path}")
        if received in self.HANDED_ON:
            signum = signal.Signals[received]
            self.teardown(trainer, pl_module, "fit")
            handler = signal.getsignal(signum)
            try:
                if callable(handler):
                    handler(signum, None)  # e.g. submitit: requeue the job, then exit
            except Exception as error:  # e.g. no requeue left: the checkpoint is saved all the same
                log.warning(
                    f"the {received} handler of the launcher failed ({type(error).__name__}: {error})"
                )
        raise RunInterrupted(received, trainer.global_step, str(self.path))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler)
        self._previous = {}


class LastCheckpoint(ModelCheckpoint):
    """`checkpoints/last.ckpt` every `every_n_train_steps` steps and once more when training ends.

    A ModelCheckpoint with no monitor that keeps one file: `resume=auto` continues from it, and the final
    one lets a finished run train on (`resume=<run dir> trainer.max_epochs=<more>`).
    """

    def __init__(self, dirpath: str, every_n_train_steps: int | None = 200) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if (
            trainer.fast_dev_run
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        ):
            return
        self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))


class LoggerContinuity(L.Callback):
    """Loggers a resumed run can continue: flushed after every checkpoint, with the wandb run id in it.

    What the loggers buffered is written at the first batch after each checkpoint (once the rows of the
    checkpointed step are logged), so a kill loses no rows from before the checkpoint. A resumed run is
    given `earlier_rows`, the CSV rows its killed part wrote: the CSV logger empties its file when it
    starts, so `restore()` writes them back at once (a run that fails before its first batch loses none),
    and at the first batch, where Lightning knows which logging step comes next, the rows from that step
    on, which this run logs again, are dropped. `genlab train` passes the stored wandb id back to the wandb
    logger, which then continues the same wandb run.
    """

    def __init__(self, earlier_rows: dict[Any, list[dict[str, str]]] | None = None) -> None:
        self.earlier_rows = dict(earlier_rows or {})
        self._flush = False

    def restore(self) -> None:
        """Write the earlier rows back (after the loggers started) and make them the logger's header."""
        for logger, rows in self.earlier_rows.items():
            header = sorted({key for row in rows for key in row})
            _write_csv(Path(logger.experiment.metrics_file_path), header, rows)
            logger.experiment.metrics_keys[:] = header

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._flush = True
        ids = {
            type(lg).__name__: str(lg.version) for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"
        }
        checkpoint["genlab_logger_ids"] = ids

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.earlier_rows:
            next_step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger, rows in self.earlier_rows.items():
                kept = [row for row in rows if int(row.get("step", 0)) < next_step]
                _write_csv(Path(logger.experiment.metrics_file_path), logger.experiment.metrics_keys, kept)
            self.earlier_rows = {}
        if self._flush:
            for logger in trainer.loggers:
                logger.save()
            self._flush = False


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    import csv

    from genlab.atomic import atomic_write

    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
