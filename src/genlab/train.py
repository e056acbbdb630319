"""`genlab train`: compose the config, instantiate data, model, callbacks, loggers and trainer, fit, record.

Returns the objective metric named by `objective.metric` so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.config import check_mandatory
from genlab.errors import CheckpointError, ConfigError, GenlabError
from genlab.runs.record import RECORD_NAME, RunRecord
from genlab.runs.resume import (
    config_source_flags,
    continue_wandb_run,
    csv_rows,
    resume_checkpoint,
    resume_command,
)

log = logging.getLogger("genlab.train")


def run(cfg: DictConfig) -> float | None:
    """Train one experiment; the run directory is Hydra's output dir (`paths.output_dir`)."""
    check_mandatory(cfg)

    import lightning as L  # heavy: imported only once the config is known to be complete
    from hydra.utils import instantiate
    from lightning.pytorch.utilities import rank_zero_only

    from genlab.callbacks.resume import LoggerContinuity, Preemption, RunInterrupted, StepSeed
    from genlab.checkpoints import AtomicCheckpointIO, newest_complete, remove_unfinished_saves, resume_info

    # Lightning's own console handler would print every line twice beside Hydra's (which also fills train.log)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    run_dir = cfg.paths.output_dir
    launch_env = {name: os.environ.get(name) for name in _LAUNCH_ENV}
    overrides = list(HydraConfig.get().overrides.task)
    ckpt_path = resume_checkpoint(cfg.get("resume"), Path(run_dir))
    resumed = resume_info(Path(ckpt_path)) if ckpt_path is not None else {}
    continuing = ckpt_path is not None and (Path(run_dir) / RECORD_NAME).is_file()  # in this run's own dir
    record = None
    if rank_zero_only.rank == 0:
        if continuing:
            step = resumed.get("global_step")
            record = RunRecord.resume(run_dir, checkpoint=str(ckpt_path), step=step, overrides=overrides)
        else:
            record = RunRecord.start(
                run_dir,
                experiment=cfg.experiment_name,
                seed=cfg.seed,
                overrides=overrides,
                tags=list(cfg.get("tags") or []),
            )  # after `import lightning`, so the hardware it records includes torch's devices
    trainer = None
    try:
        if cfg.get("threads"):
            import torch

            torch.set_num_threads(int(cfg.threads))
        L.seed_everything(cfg.seed, workers=True)

        log.info(f"data: {cfg.data._target_} ({cfg.data.get('dataset', '')})")
        datamodule = build_datamodule(cfg)

        log.info(f"model: {cfg.model._target_}")
        optimizer = instantiate(cfg.optimizer) if cfg.get("optimizer") else None
        _check_optimizer(cfg, optimizer)
        scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
        module = instantiate(cfg.model, optimizer=optimizer, scheduler=scheduler, _convert_="all")
        if cfg.get("compile"):
            compile_nets(module)

        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
        if continuing:
            continue_wandb_run(cfg, resumed.get("logger_ids", {}).get("WandbLogger"))
            # a folder that already holds logs and checkpoints is what resuming means; the CSV rows come back
            for text in ("Experiment logs directory .* exists", "Checkpoint directory .* exists"):
                warnings.filterwarnings("ignore", message=text)
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
        continuity = LoggerContinuity(
            csv_rows(loggers) if continuing else None
        )  # read before the loggers start
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        continuity.restore()
        if not loggers:  # logger=none: the learning-rate monitor has nowhere to write
            from lightning.pytorch.callbacks import LearningRateMonitor

            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        # always on. LoggerContinuity first: it flushes the loggers before other callbacks log for a step.
        # StepSeed: each step's random numbers follow from (seed, epoch, batch), so a resumed run draws the
        # same ones. Preemption: a signal saves checkpoints/last.ckpt before stopping.
        callbacks = [
            continuity,
            *callbacks,
            StepSeed(cfg.seed),
            Preemption(str(Path(run_dir) / "checkpoints")),
        ]
        _check_cpu_devices(cfg)
        _pin_ddp_relaunch_to_this_job()
        trust = bool(cfg.get("trust_checkpoint"))
        trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO(trust)]
        )

        if ckpt_path is not None:
            for stale in remove_unfinished_saves(Path(run_dir) / "checkpoints"):
                log.warning(f"removed {stale.name}, a checkpoint save that was cut off")
            log.info(f"resuming from {ckpt_path}")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trust)
        except CheckpointError as error:
            named = not ckpt_path or str(ckpt_path) in str(error)
            raise CheckpointError(str(error) if named else f"resume={ckpt_path}: {error}") from None
        metrics = _scalars(trainer.callback_metrics)

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        # a sweep's pruner stopped the run (callbacks/optuna_pruning.py): recorded as such, and not tested
        pruned = next((c.pruned_at_step for c in callbacks if getattr(c, "pruned_at_step", None)), None)
        if cfg.get("test") and pruned is None and _overrides(module, "test_step"):
            results = trainer.test(
                module, datamodule=datamodule, ckpt_path=best or None, weights_only=not trust
            )
            for result in results:
                metrics.update(_scalars(result))

        if record is not None:
            status, extra = ("completed", {}) if pruned is None else ("pruned", {"pruned_at_step": pruned})
            record.finish(status, metrics=metrics, best_checkpoint=best, steps=trainer.global_step, **extra)
            log.info(f"run {status}: {record.path}")
        return _objective(cfg, metrics)
    except (KeyboardInterrupt, SystemExit, RunInterrupted) as stop:
        saved = stop.checkpoint if isinstance(stop, RunInterrupted) else None
        if saved is None:
            last = newest_complete(Path(run_dir) / "checkpoints")
            saved = str(last) if last is not None else None
        if record is not None:
            record.finish("interrupted", steps=getattr(trainer, "global_step", None), last_checkpoint=saved)
            log.error(f"run interrupted ({stop or type(stop).__name__}); its record is {record.path}")
            if saved is not None:
                command = resume_command(overrides, run_dir)
                log.error(f"resume it with: {command}")
                print(f"resume with: {command}", file=sys.stderr)
        if isinstance(stop, RunInterrupted):
            raise SystemExit(stop.exit_code) from None
        raise
    except BaseException as error:
        if record is not None:
            reason = (_user_error(error) if isinstance(error, Exception) else None) or error
            message = f"{type(reason).__name__}: {reason}"
            step = getattr(trainer, "global_step", None)
            if continuing and (step is None or step <= (resumed.get("global_step") or 0)):
                # the resume failed before training went on: the run is as it was, and resumable
                record.update(status=record.data["resumes"][-1]["previous_status"], resume_error=message)
            else:
                record.finish("failed", error=message, steps=step)
        raise
    finally:
        if "genlab.trackers" in sys.modules:  # a wandb logger ran: its files are complete when this returns
            sys.modules["genlab.trackers"].finish_previous_run()
        _release_process_group(launch_env)


def build_datamodule(cfg: DictConfig):
    """The datamodule, read and split; what only it knows (a tokenizer's vocab_size) goes to `cfg.runtime`."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    runtime = datamodule.runtime_info() if hasattr(datamodule, "runtime_info") else {}
    with open_dict(cfg):
        cfg.runtime = OmegaConf.merge(cfg.get("runtime") or {}, runtime)
    return datamodule


def _pin_ddp_relaunch_to_this_job() -> None:
    """Lightning starts DDP ranks > 0 by re-running `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`.

    In a sweep both are wrong: `sys.argv` holds `-m` and the whole sweep (the other ranks would re-run it,
    with other hyperparameters under a sweeper), and `run.dir` is not the job's folder. Pin them to this
    job: its own overrides and its own output dir.
    """
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *config_source_flags(sys.argv[1:]), *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _release_process_group(launch_env: dict[str, str | None]) -> None:
    """A sweep runs its jobs in one process: the next job's DDP must start afresh.

    Lightning leaves the process group open and sets LOCAL_RANK & co. in the launching process, after
    which it believes some outside launcher started the ranks and would wait forever for them.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in launch_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Plain floats of every scalar metric, sorted by name; learning rates are a curve, not a result."""
    out = {}
    for name, value in metrics.items():
        if name.startswith("lr-") or (hasattr(value, "numel") and value.numel() != 1):
            continue
        out[name] = float(value)
    return dict(sorted(out.items()))


NETS = ("net", "generator", "discriminator")  # where the families keep their plain nn.Modules


def compile_nets(module: Any) -> list[str]:
    """`compile: true`: compile each net of the module in place with `nn.Module.compile()` (torch.compile).

    In place, unlike `torch.compile(net)`, which wraps it: the state_dict keeps its keys, so checkpoints
    load into compiled and eager modules alike. Returns the names of the compiled nets.
    """
    names = [name for name, child in module.named_children() if name in NETS]
    if not names:
        raise ConfigError(f"compile=true: {type(module).__name__} has no net ({', '.join(NETS)}) to compile")
    for name in names:
        getattr(module, name).compile()
    return names


def _overrides(module: Any, hook: str) -> bool:
    import lightning as L

    return getattr(type(module), hook) is not getattr(L.LightningModule, hook)


def _objective(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    objective = cfg.get("objective")
    if not objective or not objective.get("metric"):
        return None
    value = metrics.get(objective.metric)
    if value is None:
        log.warning(f"objective metric {objective.metric!r} was not logged; known: {sorted(metrics)}")
    return value


def main(cfg: DictConfig) -> float | None:
    """Hydra task function: user errors end the run with one line; in a sweep, a failed job does not stop the rest."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except Exception as raised:
        error = _user_error(raised)
        if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            if multirun and not isinstance(raised, GenlabError):
                log.exception("job failed; the sweep goes on")
                return math.nan
            raise
        log.error(f"error: {error}")
        if multirun:
            return math.nan
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _check_optimizer(cfg: DictConfig, optimizer: Any) -> None:
    """A value of the wrong type (`optimizer.lr=abc`) would otherwise fail deep inside torch at the first step."""
    if optimizer is None:
        return
    import torch

    try:
        optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as error:
        values = [
            f"optimizer.{k}={v}" for k, v in cfg.optimizer.items() if isinstance(v, str) and k[0] != "_"
        ]
        fix = (
            "give numbers, e.g. optimizer.lr=1e-3" if values else "fix or remove (~optimizer.<key>) that key"
        )
        raise ConfigError(
            f"{', '.join(values) or 'optimizer'}: rejected by {cfg.optimizer._target_} ({error}); {fix}"
        ) from None


def _check_cpu_devices(cfg: DictConfig) -> None:
    """On CPU, Lightning starts `trainer.devices` processes however few cores there are: more is a mistake."""
    import torch

    devices, accelerator = cfg.trainer.get("devices"), cfg.trainer.get("accelerator")
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    cores = os.cpu_count() or 1
    if (
        (accelerator == "cpu" or (accelerator == "auto" and not gpu))
        and isinstance(devices, int)
        and devices > cores
    ):
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {cores} CPU cores and no GPU in use: "
            f"set trainer.devices={cores} or fewer (or trainer.accelerator=gpu on a GPU machine)"
        )


def _user_error(error: BaseException) -> GenlabError | None:
    """Known failures caused by the user's input, as one-line errors; None for anything else (a bug).

    Hydra wraps errors of the objects it builds (a net refusing an image size, Lightning refusing
    `trainer.devices`) in an InstantiationException; OmegaConf reports a broken interpolation.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, GenlabError):
            return cause
        cause = cause.__cause__
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    lightning_errors = sys.modules.get("lightning.fabric.utilities.exceptions")  # loaded if Lightning ran
    misconfiguration = getattr(lightning_errors, "MisconfigurationException", OmegaConfBaseException)
    hint = "(HYDRA_FULL_ERROR=1 shows the traceback)"
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, misconfiguration):
        error = error.__cause__
    elif isinstance(error, InstantiationException) and isinstance(error.__cause__, (TypeError, ValueError)):
        # a constructor refusing a value (`model.net.latent_dim=abc`): Hydra's last line names the key
        lines = str(error).splitlines()
        key = lines[-1].removeprefix("full_key: ") if lines[-1].startswith("full_key: ") else "config"
        cause = error.__cause__
        return ConfigError(f"{key}: {lines[0].rstrip(':')}: {type(cause).__name__}: {cause} {hint}")
    if isinstance(error, FloatingPointError):  # a module's own divergence check (the GAN's)
        from genlab.callbacks.guards import NonFiniteLossError

        return NonFiniteLossError(str(error))
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        text = str(error).strip().splitlines()[0]  # the rest repeats full_key and the node type
        return ConfigError(f"{key + ': ' if key else ''}{text}; choose options that fit together {hint}")
    if isinstance(error, misconfiguration):
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        about_devices = any(
            word in text.lower() for word in ("device", "accelerator", "gpu", "cuda", "strategy")
        )
        fix = (
            "check trainer.accelerator and trainer.devices" if about_devices else "check the trainer options"
        )
        return ConfigError(f"{text}; {fix} {hint}")
    return None
