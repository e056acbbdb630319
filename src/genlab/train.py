"""`genlab train`: compose the config, instantiate data, model, callbacks, loggers and trainer, fit, record.

Returns the objective metric named by `objective.metric` so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.config import check_mandatory
from genlab.errors import GenlabError
from genlab.runs.record import RunRecord, hardware

log = logging.getLogger("genlab.train")


def run(cfg: DictConfig) -> float | None:
    """Train one experiment; the run directory is Hydra's output dir (`paths.output_dir`)."""
    check_mandatory(cfg)

    import lightning as L  # heavy: imported only once the config is known to be complete
    from hydra.utils import instantiate
    from lightning.pytorch.utilities import rank_zero_only

    # Lightning's own console handler would print every line twice beside Hydra's (which also fills train.log)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    run_dir = cfg.paths.output_dir
    launch_env = {name: os.environ.get(name) for name in _LAUNCH_ENV}
    record = None
    if rank_zero_only.rank == 0:
        record = RunRecord.start(
            run_dir,
            experiment=cfg.experiment_name,
            seed=cfg.seed,
            overrides=list(HydraConfig.get().overrides.task),
            tags=list(cfg.get("tags") or []),
        )
        record.update(hardware=hardware())
    trainer = None
    try:
        if cfg.get("threads"):
            import torch

            torch.set_num_threads(int(cfg.threads))
        L.seed_everything(cfg.seed, workers=True)

        log.info(f"data: {cfg.data._target_} ({cfg.data.get('dataset', '')})")
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        runtime = datamodule.runtime_info() if hasattr(datamodule, "runtime_info") else {}
        with open_dict(cfg):
            cfg.runtime = OmegaConf.merge(cfg.get("runtime") or {}, runtime)

        log.info(f"model: {cfg.model._target_}")
        optimizer = instantiate(cfg.optimizer) if cfg.get("optimizer") else None
        scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
        module = instantiate(cfg.model, optimizer=optimizer, scheduler=scheduler, _convert_="all")

        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if not loggers:  # logger=none: the learning-rate monitor has nowhere to write
            from lightning.pytorch.callbacks import LearningRateMonitor

            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        _pin_ddp_relaunch_to_this_job()
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

        trainer.fit(module, datamodule=datamodule)
        if trainer.interrupted:
            raise KeyboardInterrupt
        metrics = _scalars(trainer.callback_metrics)

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if cfg.get("test") and _overrides(module, "test_step"):
            results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            for result in results:
                metrics.update(_scalars(result))

        if record is not None:
            record.finish("completed", metrics=metrics, best_checkpoint=best, steps=trainer.global_step)
            log.info(f"run completed: {record.path}")
        return _objective(cfg, metrics)
    except (KeyboardInterrupt, SystemExit):
        if record is not None:
            record.finish("interrupted", steps=getattr(trainer, "global_step", None))
            log.error(f"run interrupted; its record is {record.path}")
        raise
    except BaseException as error:
        if record is not None:
            record.finish(
                "failed",
                error=f"{type(error).__name__}: {error}",
                steps=getattr(trainer, "global_step", None),
            )
        raise
    finally:
        _release_process_group(launch_env)


def _pin_ddp_relaunch_to_this_job() -> None:
    """Lightning starts DDP ranks > 0 by re-running `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`.

    In a sweep both are wrong: `sys.argv` holds `-m` and the whole sweep (the other ranks would re-run it,
    with other hyperparameters under a sweeper), and `run.dir` is not the job's folder. Pin them to this
    job: its own overrides and its own output dir.
    """
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *_config_source_flags(sys.argv[1:]), *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


_CONFIG_SOURCE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")


def _config_source_flags(argv: list[str]) -> list[str]:
    """The flags that chose the primary config (`genlab reproduce` uses them): other ranks need them too."""
    kept, args = [], iter(argv)
    for arg in args:
        if arg in _CONFIG_SOURCE_FLAGS:
            kept += [arg, next(args, "")]
        elif arg.startswith(tuple(f"{flag}=" for flag in _CONFIG_SOURCE_FLAGS)):
            kept.append(arg)
    return kept


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
    except GenlabError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error(f"error: {error}")
        if multirun:
            return math.nan
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception:
        if multirun:
            log.exception("job failed; the sweep goes on")
            return math.nan
        raise
