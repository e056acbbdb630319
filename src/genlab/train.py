"""`genlab train`: compose the config, instantiate data, model, callbacks, loggers and trainer, fit, record.

Returns the objective metric named by `objective.metric` so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import math
import os
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from genlab.config import check_mandatory
from genlab.errors import GenlabError, user_error
from genlab.runs.resume import config_source_flags

log = logging.getLogger("genlab.train")


def run(cfg: DictConfig) -> float | None:
    """Train one experiment; the run directory is Hydra's output dir (`paths.output_dir`)."""
    check_mandatory(cfg)
    # the imports below take seconds (~6 s on 2 cores): say what is happening before them (not in a resume,
    # whose run dir, train.log included, must stay as it was should the resume fail)
    if not cfg.get("resume"):
        log.info(f"experiment {cfg.get('experiment_name')}: loading torch and Lightning")
    import lightning as L  # heavy: imported only once the config is known to be complete  # noqa: F401

    from genlab.build import (
        build_datamodule,
        build_group,
        build_module,
        build_trainer,
        compile_nets,
        implements,
        scalar_metrics,
    )
    from genlab.runs.lifecycle import RunLifecycle
    from genlab.runs.snapshot import detach_file_logs

    _quiet_lightning_console()
    life = RunLifecycle(cfg, cfg.paths.output_dir, list(HydraConfig.get().overrides.task))
    done = life.already_complete()
    if done is not None:  # said once; the run dir stays exactly as it was
        detach_file_logs(life.run_dir)
        log.info(done)
        return life.recorded_objective()
    with life:
        log.info(f"data: {cfg.data._target_} ({cfg.data.get('dataset', '')})")
        datamodule = build_datamodule(cfg)

        log.info(f"model: {cfg.model._target_}")
        module = build_module(cfg)
        life.init_weights(module)
        if cfg.get("compile"):
            compile_nets(module)

        loggers = build_group(cfg, "logger")
        callbacks = life.resume_callbacks(build_group(cfg, "callbacks"), loggers)
        _pin_ddp_relaunch_to_this_job()
        trainer = build_trainer(cfg, callbacks, loggers, trust=life.trust)
        life.fit(trainer, module, datamodule)
        metrics = scalar_metrics(trainer.callback_metrics)

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if cfg.get("test") and life.pruned_at_step is None and implements(module, "test_step"):
            for result in trainer.test(
                module, datamodule=datamodule, ckpt_path=best, weights_only=not life.trust
            ):
                metrics.update(scalar_metrics(result))
        return life.complete(metrics, best_checkpoint=best)


def _quiet_lightning_console() -> None:
    """Lightning's own console handler would print every line twice beside Hydra's (which fills train.log)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


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


def main(cfg: DictConfig) -> float | None:
    """Hydra task function: user errors end the run with one line; in a sweep, a failed job does not stop the rest."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except Exception as raised:
        error = user_error(raised)
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
