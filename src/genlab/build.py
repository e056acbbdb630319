"""Building a run's objects from its composed config: the datamodule, the module with its optimiser and
scheduler partials, compiled nets. Shared by train, eval, sample and `genlab.load`; the only caller of
Hydra's `instantiate` for them."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.errors import ConfigError


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


def build_module(cfg: DictConfig, optimizer: bool = True) -> Any:
    """The family's LightningModule with its built net(s); with the optimiser and scheduler partials when
    `optimizer` (training), without them otherwise (evaluation, sampling, loading)."""
    from hydra.utils import instantiate

    optimizer_factory = build_partial(cfg, "optimizer") if optimizer else None
    if optimizer_factory is not None:
        _check_optimizer(cfg, optimizer_factory)
    scheduler_factory = build_partial(cfg, "scheduler") if optimizer else None
    return instantiate(cfg.model, optimizer=optimizer_factory, scheduler=scheduler_factory, _convert_="all")


def build_group(cfg: DictConfig, group: str) -> list[Any]:
    """Every entry of the `callbacks` or `logger` group, built. `null` switches an entry off; an entry without
    `_target_` holds settings for a callback the recipe does not use (the debug presets tune `sample_grid` for
    every family), unless no shipped config knows its name: then it is a typo, and a silent no-op would hide it."""
    from hydra.utils import instantiate

    built, unknown = [], []
    for name, node in (cfg.get(group) or {}).items():
        if node is None:
            continue
        if "_target_" in node:
            built.append(instantiate(node))
        elif name not in shipped_names(group):
            unknown.append(name)
    if unknown:
        known = ", ".join(sorted(shipped_names(group)))
        raise ConfigError(
            f"{group}.{unknown[0]} has no _target_ and no shipped config defines it: a typo? Known {group} "
            f"entries: {known} (or give {group}.{unknown[0]}._target_=<class>)"
        )
    return built


def shipped_names(group: str) -> set[str]:
    """The entry names of `group` (callbacks, logger) that some packaged config builds (has a `_target_` for)."""
    import yaml

    from genlab.config import conf_dir

    names = set()
    for path in conf_dir().rglob("*.yaml"):
        text = yaml.safe_load(path.read_text()) or {}
        if not isinstance(text, dict):
            continue
        # a file of the group itself (conf/callbacks/default.yaml) or a node of it in a recipe or preset
        nodes = text if path.parent.name == group else text.get(group)
        for name, node in (nodes or {}).items() if isinstance(nodes, dict) else ():
            if isinstance(node, dict) and "_target_" in node:
                names.add(name)
    return names


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any], trust: bool) -> Any:
    """The Lightning Trainer of `cfg.trainer`, saving checkpoints atomically (a kill mid-save leaves the last one)."""
    from hydra.utils import instantiate

    from genlab.checkpoints import AtomicCheckpointIO

    _check_cpu_devices(cfg)
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO(trust)]
    )


def build_partial(cfg: DictConfig, group: str) -> Any:
    """The optimizer or scheduler partial; None for none (`scheduler=none` leaves a node with no target)."""
    from hydra.utils import instantiate

    node = cfg.get(group)
    return instantiate(node) if node and "_target_" in node else None


def compile_nets(module: Any) -> list[str]:
    """`compile: true`: compile each net the family declares (`net_names`) in place with `nn.Module.compile()`.

    In place, unlike `torch.compile(net)`, which wraps it: the state_dict keeps its keys, so checkpoints
    load into compiled and eager modules alike. Returns the names of the compiled nets.
    """
    import torch

    declared = getattr(module, "net_names", ())
    names = [name for name in declared if isinstance(getattr(module, name, None), torch.nn.Module)]
    if not names:
        raise ConfigError(
            f"compile=true: {type(module).__name__} has no net ({', '.join(declared)}) to compile"
        )
    for name in names:
        getattr(module, name).compile()
    return names


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Plain floats of every scalar metric, sorted by name; learning rates are a curve, not a result."""
    out = {}
    for name, value in metrics.items():
        if name.startswith("lr-") or (hasattr(value, "numel") and value.numel() != 1):
            continue
        out[name] = float(value)
    return dict(sorted(out.items()))


def implements(module: Any, hook: str) -> bool:
    """Whether the module's family defines Lightning `hook` (`test_step`...) rather than inheriting the stub."""
    import lightning as L

    return getattr(type(module), hook) is not getattr(L.LightningModule, hook)


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
