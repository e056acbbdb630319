"""`genlab train`: compose the config, instantiate data, model, callbacks, loggers and trainer, fit, record.

Returns the objective metric named by `objective.metric` so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.config import check_mandatory
from genlab.errors import ConfigError, GenlabError, user_error
from genlab.runs.resume import config_source_flags

log = logging.getLogger("genlab.train")


def run(cfg: DictConfig) -> float | None:
    """Train one experiment; the run directory is Hydra's output dir (`paths.output_dir`)."""
    check_mandatory(cfg)

    import lightning as L  # heavy: imported only once the config is known to be complete  # noqa: F401
    from hydra.utils import instantiate

    from genlab.checkpoints import AtomicCheckpointIO
    from genlab.runs.lifecycle import RunLifecycle, detach_file_logs

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
        optimizer = _partial(cfg, "optimizer")
        _check_optimizer(cfg, optimizer)
        scheduler = _partial(cfg, "scheduler")
        module = instantiate(cfg.model, optimizer=optimizer, scheduler=scheduler, _convert_="all")
        life.init_weights(module)
        if cfg.get("compile"):
            compile_nets(module)

        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
        if life.continuing:  # a folder that already holds logs and checkpoints is what resuming means
            for text in ("Experiment logs directory .* exists", "Checkpoint directory .* exists"):
                warnings.filterwarnings("ignore", message=text)
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
        callbacks = life.resume_callbacks(callbacks, loggers)
        _check_cpu_devices(cfg)
        _pin_ddp_relaunch_to_this_job()
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            plugins=[AtomicCheckpointIO(life.trust)],
        )
        life.fit(trainer, module, datamodule)
        metrics = _scalars(trainer.callback_metrics)

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if cfg.get("test") and life.pruned_at_step is None and _overrides(module, "test_step"):
            for result in trainer.test(
                module, datamodule=datamodule, ckpt_path=best, weights_only=not life.trust
            ):
                metrics.update(_scalars(result))
        return life.complete(metrics, best_checkpoint=best)


def _partial(cfg: DictConfig, group: str) -> Any:
    """The optimizer or scheduler partial; None for none (`scheduler=none` leaves a node with no target)."""
    from hydra.utils import instantiate

    node = cfg.get(group)
    return instantiate(node) if node and "_target_" in node else None


def _quiet_lightning_console() -> None:
    """Lightning's own console handler would print every line twice beside Hydra's (which fills train.log)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


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
