"""The life of one training run in its run directory, start to end, whatever ends it.

`RunLifecycle` owns what every entry point would otherwise repeat around `trainer.fit`: which checkpoint
`resume=` continues and which weights `init_from=` starts from, the run record (opened, resumed, closed as
completed, pruned, interrupted or failed), the seeding, the callbacks that make a stop resumable, the files a
failed resume must leave as they were, and the process group a sweep's next job must not inherit.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genlab.errors import CheckpointError, ConfigError
from genlab.runs.record import RECORD_NAME, RunRecord
from genlab.runs.resume import (
    check_same_optimisation,
    describe_budget,
    resume_checkpoint,
    resume_command,
    training_budget,
)
from genlab.runs.snapshot import RunDirSnapshot, hydra_output_config

log = logging.getLogger("genlab.train")

_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class RunLifecycle:
    """One `genlab train` run. Use as a context manager around building and fitting:

        with RunLifecycle(cfg, run_dir, overrides) as life:
            ...build datamodule, module (life.init_weights(module)), loggers, trainer...
            life.fit(trainer, module, datamodule)
            return life.complete(metrics, best_checkpoint=...)

    Leaving the block by an exception records the run as interrupted (a signal, Ctrl-C) or failed; a resume
    that fails before training went on leaves the run dir as it was instead.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path, overrides: list[str]) -> None:
        from lightning.pytorch.utilities import rank_zero_only

        from genlab.checkpoints import resume_info

        self.cfg = cfg
        self.run_dir = Path(run_dir).absolute()
        self.overrides = list(overrides)
        self.trust = bool(cfg.get("trust_checkpoint"))
        self.rank_zero = rank_zero_only.rank == 0
        self.ckpt_path = resume_checkpoint(cfg.get("resume"), self.run_dir)
        self.resumed = resume_info(Path(self.ckpt_path)) if self.ckpt_path is not None else {}
        # continuing in this run's own folder (resume=auto), rather than from another run's checkpoint
        self.continuing = self.ckpt_path is not None and (self.run_dir / RECORD_NAME).is_file()
        self.record: RunRecord | None = None
        self.declared_modes: dict[str, str] = {}  # metric directions the module and callbacks declare
        self.trainer: Any = None
        self.callbacks: list[Any] = []
        self._snapshot: RunDirSnapshot | None = None
        self._launch_env = {name: os.environ.get(name) for name in _LAUNCH_ENV}

    # ---- before anything is built -------------------------------------------------------------------

    def already_complete(self) -> str | None:
        """For `resume=auto` on a run that completed with the training budget asked for now: the one line
        that says so (nothing is run and nothing changes). A larger budget trains on instead."""
        if not self.continuing:
            return None
        record = RunRecord.load(self.run_dir).data
        if record.get("status") != "completed" or self.resumed.get("global_step") != record.get("steps"):
            return None
        budget = training_budget(self.cfg)
        if budget != training_budget(self.latest_config()):
            return None
        return (
            f"{self.run_dir} is already complete ({record.get('steps')} steps, {describe_budget(budget)}); nothing "
            "to do. To train longer, raise trainer.max_steps or trainer.max_epochs with resume=auto; to start "
            "anew from its weights, use init_from=<run dir>"
        )

    def recorded_objective(self) -> float | None:
        """The objective metric the completed run recorded (what a requeued sweep job reports again)."""
        name = (self.cfg.get("objective") or {}).get("metric")
        return (RunRecord.load(self.run_dir).data.get("metrics") or {}).get(name) if name else None

    def latest_config(self) -> DictConfig:
        """The config the run dir last trained with: the newest successful resume's, else the first."""
        record = RunRecord.load(self.run_dir).data
        for resume in reversed(record.get("resumes") or []):
            if resume.get("config") and (self.run_dir / resume["config"]).is_file():
                return OmegaConf.load(self.run_dir / resume["config"])
        return OmegaConf.load(self.run_dir / ".hydra" / "config.yaml")

    def check_resume_config(self) -> None:
        """`resume` continues a run exactly: optimiser or scheduler settings other than the checkpoint's
        would be silently ignored, so they are refused (`init_from` starts anew instead)."""
        if self.ckpt_path is not None:
            check_same_optimisation(
                self.cfg, Path(self.ckpt_path), self.latest_config() if self.continuing else None
            )

    # ---- the run --------------------------------------------------------------------------------------

    def __enter__(self) -> RunLifecycle:
        if self.rank_zero and self.continuing:
            self._snapshot = RunDirSnapshot(self.run_dir)
        try:
            self.check_resume_config()
            self._open_record()
            import lightning as L
            import torch

            if self.cfg.get("threads"):
                torch.set_num_threads(int(self.cfg.threads))
            if not torch.cuda.is_available():
                # Lightning sets this so that CUDA checks never initialise CUDA before a fork; without a GPU it
                # only makes each check reload NVML, which torch's optimisers do at every step (0.7 ms an Adam
                # step on a CUDA build of torch; docs/performance.md)
                os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
            L.seed_everything(self.cfg.seed, workers=True)
            self._share_tokenizer()
            if self.continuing:  # before the loggers are built: it logs to the tracker runs it started
                from genlab.runs.resume import continue_tracker_runs

                continue_tracker_runs(self.cfg, self.resumed.get("logger_ids") or {})
        except BaseException as error:  # __exit__ is not called when __enter__ fails
            self.__exit__(type(error), error, None)
            raise
        return self

    def _open_record(self) -> None:
        if not self.rank_zero:
            return
        if self.continuing:
            self.record = RunRecord.resume(
                self.run_dir,
                checkpoint=_relative(self.ckpt_path, self.run_dir),
                step=self.resumed.get("global_step"),
                overrides=self.overrides,
                config=_relative(hydra_output_config(), self.run_dir),
            )
        else:
            self.record = RunRecord.start(
                self.run_dir,
                experiment=self.cfg.experiment_name,
                seed=self.cfg.seed,
                overrides=self.overrides,
                tags=list(self.cfg.get("tags") or []),
            )  # after `import lightning`, so the hardware it records includes torch's devices
        log.info(f"run dir: {self.run_dir}")

    def _share_tokenizer(self) -> None:
        """`init_from` a language model: the new data is read with the source run's tokenizer (the weights
        are embeddings of its token ids), copied into this run's tokenizer_dir before the data is read."""
        source, tokenizer_dir = self.cfg.get("init_from"), (self.cfg.get("data") or {}).get("tokenizer_dir")
        if (
            not source
            or not tokenizer_dir
            or not self.rank_zero
            or not Path(str(source)).expanduser().exists()
        ):
            return  # (a missing source is reported by init_weights)
        import shutil

        from genlab.data.tokenizers import TOKENIZER_FILE
        from genlab.runs.loading import locate_path

        source_dir, _ = locate_path(Path(str(source)).expanduser())
        if (source_dir / TOKENIZER_FILE).is_file() and not (Path(tokenizer_dir) / TOKENIZER_FILE).is_file():
            Path(tokenizer_dir).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_dir / TOKENIZER_FILE, Path(tokenizer_dir) / TOKENIZER_FILE)

    def init_weights(self, module: Any) -> None:
        """`init_from=<run dir | .ckpt>`: the weights only (no optimiser, scheduler, loop or sampler state)."""
        source = self.cfg.get("init_from")
        if not source:
            return
        if self.ckpt_path is not None:
            raise ConfigError(
                "give resume= or init_from=, not both: resume continues a run, init_from starts anew"
            )
        from genlab.checkpoints import init_weights

        path, step = init_weights(module, Path(str(source)).expanduser(), trust=self.trust)
        log.info(f"weights from {path} (step {step}); optimiser, scheduler and data order start afresh")
        if self.record is not None:
            self.record.update(init_from={"checkpoint": str(path.absolute()), "step": step})

    def resume_callbacks(self, callbacks: list[Any], loggers: list[Any]) -> list[Any]:
        """`callbacks` with the ones every run has: where a resumed run stands, its loggers' rows, per-step
        seeds, and a checkpoint on signals. Call after the loggers are built, before they log anything."""
        if self.continuing:  # a folder that already holds logs and checkpoints is what resuming means
            for text in ("Experiment logs directory .* exists", "Checkpoint directory .* exists"):
                warnings.filterwarnings("ignore", message=text)
        from genlab.callbacks.resume import LoggerContinuity, Preemption, ResumePosition, StepSeed
        from genlab.callbacks.validate_at_end import ValidateAtEnd
        from genlab.runs.resume import csv_rows

        continuity = LoggerContinuity(  # the rows are read before the loggers start (they empty the file)
            csv_rows(loggers) if self.continuing else None,
            self.resumed.get("pending_rows") if self.continuing else None,
        )
        continued = set(self.resumed.get("logger_ids") or {}) if self.continuing else set()
        for logger in loggers:
            if type(logger).__name__ == "MLFlowLogger" and "MLFlowLogger" in continued:
                continue  # MLflow's params are write-once: the run keeps its first config (run.json lists resumes)
            logger.log_hyperparams(OmegaConf.to_container(self.cfg, resolve=True))
        continuity.restore(loggers)
        if not loggers:  # logger=none: the learning-rate monitor has nowhere to write
            from lightning.pytorch.callbacks import LearningRateMonitor

            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        # ResumePosition first: it fixes the logging step before anything logs at a step. LoggerContinuity
        # next: it marks the end of each step before the checkpoint callbacks save. StepSeed: each step's
        # random numbers follow from (seed, epoch, batch). Preemption: a signal saves last.ckpt and stops.
        # ValidateAtEnd: a run cut short by max_steps validates after its last step.
        self.callbacks = [
            ResumePosition(),
            continuity,
            ValidateAtEnd(),
            *callbacks,
            StepSeed(self.cfg.seed),
            Preemption(str(self.run_dir / "checkpoints")),
        ]
        return self.callbacks

    def fit(self, trainer: Any, module: Any, datamodule: Any) -> None:
        from genlab.checkpoints import remove_unfinished_saves

        self.trainer = trainer
        self._check_objective_mode([module, *trainer.callbacks])
        if self.ckpt_path is not None:
            for stale in remove_unfinished_saves(self.run_dir / "checkpoints"):
                log.warning(f"removed {stale.name}, a checkpoint save that was cut off")
            log.info(f"resuming from {self.ckpt_path}")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=self.ckpt_path, weights_only=not self.trust)
        except CheckpointError as error:
            named = not self.ckpt_path or str(self.ckpt_path) in str(error)
            raise CheckpointError(str(error) if named else f"resume={self.ckpt_path}: {error}") from None

    def _check_objective_mode(self, sources: list[Any]) -> None:
        """`objective.mode` (the sweeper's direction) must agree with how the metric's family declares it."""
        from genlab.directions import declared, declared_mode

        objective = self.cfg.get("objective") or {}
        self.declared_modes = declared(sources)
        name, mode = objective.get("metric"), objective.get("mode")
        wanted = declared_mode(name, self.declared_modes) if name else None
        if wanted is not None and mode != wanted:
            better = "largest" if wanted == "max" else "smallest"
            raise ConfigError(
                f"objective.mode={mode} but {name} is best when {better}: set objective.mode={wanted}"
            )

    @property
    def pruned_at_step(self) -> int | None:
        """The step a sweep's pruner stopped this run at (callbacks/optuna_pruning.py), or None."""
        return next((c.pruned_at_step for c in self.callbacks if getattr(c, "pruned_at_step", None)), None)

    def complete(self, metrics: dict[str, float], best_checkpoint: str | None) -> float | None:
        """Record the finished run; returns the objective metric (what a sweeper optimises)."""
        from genlab.directions import metric_modes

        objective = self.cfg.get("objective") or {}
        name = objective.get("metric")
        value = metrics.get(name) if name else None
        extra: dict[str, Any] = {}
        if name and value is None:
            extra["objective_missing"] = (
                f"objective metric {name!r} was not logged; logged: {sorted(metrics)}"
            )
            log.warning(extra["objective_missing"])
        if self.pruned_at_step is not None:
            status, extra["pruned_at_step"] = "pruned", self.pruned_at_step
        else:
            status = "completed"
        if self.record is not None:
            self.record.finish(
                status,
                metrics=metrics,
                metric_modes=metric_modes(metrics, self.declared_modes),
                best_checkpoint=_relative(best_checkpoint, self.run_dir),
                steps=self.trainer.global_step,
                **extra,
            )
            log.info(f"run {status}: {self.record.path}")
        return value

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        from genlab.callbacks.resume import RunInterrupted

        try:
            if error is None:
                return
            if isinstance(error, (KeyboardInterrupt, SystemExit, RunInterrupted)):
                self._interrupted(error)
                if isinstance(error, RunInterrupted):
                    raise SystemExit(error.exit_code) from None
                if any(getattr(c, "forced", False) for c in self.callbacks):
                    raise SystemExit(130) from None  # a second Ctrl-C: the shell's status for SIGINT
            else:
                self._failed(error)
        finally:
            if (
                "genlab.trackers" in sys.modules
            ):  # a wandb logger ran: its files are complete when this returns
                sys.modules["genlab.trackers"].finish_previous_run()
            self._release_process_group()

    def _interrupted(self, stop: BaseException) -> None:
        from genlab.callbacks.resume import RunInterrupted
        from genlab.checkpoints import newest_complete

        saved = stop.checkpoint if isinstance(stop, RunInterrupted) else None
        if saved is None:
            last = newest_complete(self.run_dir / "checkpoints")
            saved = str(last) if last is not None else None
        if self.record is None:
            return
        self.record.finish(
            "interrupted",
            steps=getattr(self.trainer, "global_step", None),
            last_checkpoint=_relative(saved, self.run_dir),
        )
        log.error(f"run interrupted ({stop or type(stop).__name__}); its record is {self.record.path}")
        if saved is not None:
            command = resume_command(self.overrides, self.run_dir)
            log.info(f"resume it with: {command}")
            print(f"resume with: {command}", file=sys.stderr)

    def _failed(self, error: BaseException) -> None:
        from genlab.errors import user_error

        if not self.rank_zero:
            return
        reason = (user_error(error) if isinstance(error, Exception) else None) or error
        message = f"{type(reason).__name__}: {reason}"
        step = getattr(self.trainer, "global_step", None)
        if self.continuing and (step is None or step <= (self.resumed.get("global_step") or 0)):
            # the resume failed before training went on: the run dir is put back as it was (resumable);
            # this attempt's config, log and error stay in its own .hydra/resume-<time>/ folder
            attempt = hydra_output_config()
            log_text = self._snapshot.restore() if self._snapshot is not None else b""
            if attempt is not None:
                (attempt.parent / "error.txt").write_text(message + "\n")
                (attempt.parent / "train.log").write_bytes(log_text)
        elif self.record is not None:
            self.record.finish("failed", error=message, steps=step)

    def _release_process_group(self) -> None:
        """A sweep runs its jobs in one process: the next job's DDP must start afresh.

        Lightning leaves the process group open and sets LOCAL_RANK & co. in the launching process, after
        which it believes some outside launcher started the ranks and would wait forever for them.
        """
        torch = sys.modules.get("torch")
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in self._launch_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _relative(path: str | Path | None, run_dir: Path) -> str | None:
    """A path inside the run dir as relative to it (run dirs move and are copied); others as given."""
    if path is None:
        return None
    try:
        return str(Path(path).absolute().relative_to(run_dir.absolute()))
    except ValueError:
        return str(path)
