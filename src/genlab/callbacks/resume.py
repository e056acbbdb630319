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

from genlab.callbacks.checkpoints import RunCheckpoint

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
        # the CPU generator and the device's own, not `torch.manual_seed`: that also queues a seed for every
        # accelerator backend torch was built with, formatting the Python stack each time (2.4 ms a step)
        torch.default_generator.manual_seed(value)
        device = pl_module.device.type
        if device == "cuda":
            torch.cuda.manual_seed(value)
        elif device == "mps":
            torch.mps.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)


class ResumePosition(L.Callback):
    """Puts a resumed run where its checkpoint stood: the step its next metrics row is logged at, and the
    epoch its training samplers draw. `genlab train` always adds it, first.

    Lightning 2.6 restores both wrongly from a checkpoint written after an epoch's last batch (the monitored
    `val/loss` checkpoint, written when validation ends): it runs an empty extra epoch, so the samplers are
    told one epoch too many and the logging step comes out one high. Here the logging step the next batch
    will use is kept in this callback's own checkpointed state, and at the start of every epoch the
    samplers are told `trainer.current_epoch`, which Lightning does restore correctly.
    """

    def __init__(self) -> None:
        self.next_logging_step = 0
        self._restored: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"next_logging_step": self.next_logging_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = int(state_dict["next_logging_step"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.utilities import CombinedLoader

        loaders = trainer.train_dataloader
        flat = loaders.flattened if isinstance(loaders, CombinedLoader) else [loaders]
        for loader in flat:
            for sampler in {id(s): s for s in _samplers(loader)}.values():
                sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._restored is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._restored
            self._restored = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        epoch_loop = trainer.fit_loop.epoch_loop
        self.next_logging_step = epoch_loop._batches_that_stepped + (
            0 if epoch_loop._should_accumulate() else 1
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """A run stopped by `trainer.max_steps` in the middle of an epoch: Lightning still closes the epoch, so
        its final checkpoints say the epoch is complete, and resuming with a larger max_steps would skip the
        rest of it (or, with max_epochs reached, not train at all). They are saved as the mid-epoch
        checkpoints they are: the epoch counted as started, not finished."""
        fit_loop = trainer.fit_loop
        progress = fit_loop.epoch_progress.current
        cut_short = (
            0 < trainer.max_steps <= trainer.global_step
            and not fit_loop.epoch_loop.batch_progress.is_last_batch
        )
        if not cut_short or progress.completed < progress.ready:
            return
        epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]
        for counts in (epochs["total"], epochs["current"]):
            counts["processed"], counts["completed"] = counts["ready"] - 1, counts["ready"] - 1
        checkpoint["epoch"] = epochs["current"]["completed"]


def _samplers(loader: Any) -> list[Any]:
    """The objects of a DataLoader that Lightning tells the epoch (`set_epoch`), as it finds them."""
    found = [
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ]
    return [s for s in found if s is not None and callable(getattr(s, "set_epoch", None))]


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
        self.forced = False  # a second Ctrl-C stopped the run at once

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
            self.forced = True
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


class LastCheckpoint(RunCheckpoint):
    """`checkpoints/last.ckpt` every `every_n_train_steps` steps and once more when training ends.

    A checkpoint callback with no monitor that keeps one file: `resume=auto` continues from it, and the final
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
    """Loggers a resumed run can continue, so that its metrics hold every row once after any kind of stop.

    A checkpoint written at the end of a training step is written before Lightning logs that step's row;
    a run stopped right after (a signal, a kill) would lose the row, and the resumed run starts after it.
    So the checkpoint carries the row (`genlab_pending_rows`), and the loggers are flushed at every save.
    A resumed run is given `earlier_rows`, the CSV rows its stopped part wrote, and the checkpoint's
    pending rows: the CSV logger empties its file when it starts, so `restore()` writes them back at once
    (a run that fails before its first batch loses none) with any pending row the stopped part did not get
    to write; at the first batch, where the logging step is known, the rows from that step on, which this
    run logs again, are dropped. The wandb run id is stored too, and `genlab train` gives it back to the
    wandb logger, which then continues the same wandb run.
    """

    def __init__(
        self,
        earlier_rows: dict[Any, list[dict[str, str]]] | None = None,
        pending_rows: list[dict[str, Any]] | None = None,
    ) -> None:
        self.earlier_rows = dict(earlier_rows or {})
        self.pending_rows = list(pending_rows or [])
        self._in_step = False  # between a training step's end and the logging of its row

    def restore(self, loggers: list) -> None:
        """Write the earlier rows back (after the loggers started) and make them the logger's header; hand
        the rows the stopped part did not log to every logger."""
        missing = [
            row
            for row in self.pending_rows
            if not any(_holds(r, row) for rows in self.earlier_rows.values() for r in rows)
        ]
        for logger, rows in self.earlier_rows.items():
            rows += [{key: str(value) for key, value in row.items()} for row in missing]
            header = sorted({key for row in rows for key in row})
            _write_csv(Path(logger.experiment.metrics_file_path), header, rows)
            logger.experiment.metrics_keys[:] = header
        for logger in loggers if missing else []:
            if logger not in self.earlier_rows:
                for row in missing:
                    values = {k: v for k, v in row.items() if k != "step"}
                    logger.log_metrics(values, step=int(row["step"]))
                logger.save()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # the tracker runs a resumed run goes on logging to (runs/resume.py: continue_tracker_runs)
        trackers = ("WandbLogger", "MLFlowLogger")
        ids = {type(lg).__name__: str(lg.version) for lg in trainer.loggers if type(lg).__name__ in trackers}
        checkpoint["genlab_logger_ids"] = ids
        checkpoint["genlab_pending_rows"] = self._row_to_come(trainer) if self._in_step else []
        for logger in trainer.loggers:  # what was logged before this checkpoint is on disk with it
            logger.save()

    @staticmethod
    def _row_to_come(trainer: L.Trainer) -> list[dict[str, Any]]:
        """The row Lightning logs for this step once the step's end hooks are done (as its logger connector
        builds it: the step's logged values, the epoch, at the current logging step), if it logs one."""
        connector = trainer._logger_connector
        if not trainer.loggers or not connector.should_update_logs:
            return []
        from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars

        values = convert_tensors_to_scalars(connector.metrics["log"])
        if not values:
            return []
        values.setdefault("epoch", trainer.current_epoch)
        return [{**values, "step": trainer.fit_loop.epoch_loop._batches_that_stepped}]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._in_step = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._in_step = False
        if self.earlier_rows:
            next_step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger, rows in self.earlier_rows.items():
                kept = [row for row in rows if int(row.get("step", 0)) < next_step]
                _write_csv(Path(logger.experiment.metrics_file_path), logger.experiment.metrics_keys, kept)
            self.earlier_rows = {}

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._in_step = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._in_step = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._in_step = False


def _holds(row: dict[str, str], pending: dict[str, Any]) -> bool:
    """Whether a CSV row read back is the pending row (same step, every one of its metrics present)."""
    return str(row.get("step")) == str(pending["step"]) and all(key in row for key in pending)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    import csv

    from genlab.atomic import atomic_write

    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
