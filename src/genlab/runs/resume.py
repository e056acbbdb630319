"""Continuing a run: which checkpoint `resume=` names, the command that resumes an interrupted run, and
what the loggers need to pick up where the run stopped (the CSV rows, the wandb run id)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.errors import CheckpointError, ConfigError

log = logging.getLogger("genlab.train")


def resume_checkpoint(resume: Any, run_dir: Path) -> str | None:
    """The checkpoint `resume=` names (see conf/train.yaml), or None for a fresh start."""
    if resume is None or resume is False or str(resume) == "":
        return None
    resume = str(resume)
    from genlab.checkpoints import newest_complete

    if resume in ("auto", "auto_or_new"):
        found = newest_complete(run_dir / "checkpoints")
        if found is not None:
            return str(found)
        if resume == "auto_or_new":
            log.info(f"resume=auto_or_new: no checkpoint in {run_dir / 'checkpoints'} yet, starting afresh")
            return None
        raise ConfigError(
            f"resume=auto: no complete checkpoint in {run_dir / 'checkpoints'}; pass hydra.run.dir=<the "
            "interrupted run's folder>, or resume=auto_or_new to start afresh when there is none"
        )
    path = Path(resume).expanduser()
    if path.is_dir():
        found = newest_complete(path / "checkpoints") or newest_complete(path)
        if found is None:
            raise CheckpointError(
                f"resume={resume}: no complete checkpoint in that folder or its checkpoints/"
            )
        return str(found)
    if not path.is_file():
        raise CheckpointError(
            f"resume={resume}: no such file; give a .ckpt file, a run folder, or resume=auto"
        )
    return str(path)


def resume_command(overrides: list[str], run_dir: str | Path) -> str:
    """The command that continues this run in its own folder."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("resume", "hydra.run.dir")]
    kept = [*config_source_flags(sys.argv[1:]), *kept]  # a reproduced run's own primary config
    return " ".join(
        [
            "genlab",
            "train",
            *map(shlex.quote, kept),
            f"hydra.run.dir={shlex.quote(str(run_dir))}",
            "resume=auto",
        ]
    )


def continue_tracker_runs(cfg: DictConfig, logger_ids: dict[str, str]) -> None:
    """A resumed run logs to the wandb or MLflow run it started (their ids are in the checkpoint), not to new ones."""
    for node in (cfg.get("logger") or {}).values():
        if node is None:
            continue
        target = str(node.get("_target_", "")).lower()
        with open_dict(node):
            if "wandb" in target and logger_ids.get("WandbLogger"):
                node.id, node.resume = logger_ids["WandbLogger"], "allow"
            elif "mlflow" in target and logger_ids.get("MLFlowLogger"):
                node.run_id = logger_ids["MLFlowLogger"]


def csv_rows(loggers: list) -> dict[Any, list[dict[str, str]]]:
    """The rows each CSV logger's metrics.csv already holds (the logger deletes the file when it starts)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    rows = {}
    for logger in loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is not None and path.is_file():
            with path.open(newline="") as f:
                rows[logger] = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return rows


_CONFIG_SOURCE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")


def config_source_flags(argv: list[str]) -> list[str]:
    """The flags that chose the primary config (`genlab reproduce` uses them): other ranks need them too."""
    kept, args = [], iter(argv)
    for arg in args:
        if arg in _CONFIG_SOURCE_FLAGS:
            kept += [arg, next(args, "")]
        elif arg.startswith(tuple(f"{flag}=" for flag in _CONFIG_SOURCE_FLAGS)):
            kept.append(arg)
    return kept


def training_budget(cfg: DictConfig) -> tuple[Any, Any]:
    trainer = cfg.get("trainer") or {}
    return trainer.get("max_steps"), trainer.get("max_epochs")


def describe_budget(budget: tuple[Any, Any]) -> str:
    return f"trainer.max_steps={budget[0]}, trainer.max_epochs={budget[1]}"


def check_same_optimisation(cfg: DictConfig, ckpt: Path, run_config: DictConfig | None) -> None:
    """`resume` continues a run exactly: the optimiser and scheduler come from the checkpoint, so other
    settings for them would be silently ignored. Say so, and point to `init_from` for a new start."""
    stored = _stored_config(ckpt, run_config)
    if stored is None:
        return
    for group in ("optimizer", "scheduler"):
        ours, theirs = _plain(cfg.get(group)), _plain(stored.get(group))
        if ours != theirs:
            key, now_value, then_value = _first_difference(group, ours, theirs)
            raise ConfigError(
                f"resume continues the run exactly, but {key}={now_value} differs from the checkpoint's "
                f"{then_value} (its {group} state is restored as it was); to train its weights with new "
                f"settings, use init_from={ckpt} instead of resume"
            )


def _stored_config(ckpt: Path, run_config: DictConfig | None) -> DictConfig | None:
    """The config the checkpoint was trained with: `run_config` (its run's latest, when resuming in its own
    run dir), else the config beside its run dir, when there is one."""
    if run_config is not None:
        return run_config
    stored = ckpt.parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(stored) if stored.is_file() else None


def _plain(node: Any) -> Any:
    if node is None:
        return None
    try:
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception:  # an interpolation only the original run could resolve: compare unresolved
        return OmegaConf.to_container(node, resolve=False)


def _first_difference(prefix: str, ours: Any, theirs: Any) -> tuple[str, Any, Any]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs), key=str):
            if ours.get(key) != theirs.get(key):
                return _first_difference(f"{prefix}.{key}", ours.get(key), theirs.get(key))
    return prefix, ours, theirs
