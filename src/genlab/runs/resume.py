"""Continuing a run: which checkpoint `resume=` names, the command that resumes an interrupted run, and
what the loggers need to pick up where the run stopped (the CSV rows, the wandb run id)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

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


def continue_wandb_run(cfg: DictConfig, run_id: str | None) -> None:
    """A resumed run logs to the wandb run it started (its id is in the checkpoint), not to a new one."""
    for node in (cfg.get("logger") or {}).values():
        if run_id and node and "wandb" in str(node.get("_target_", "")).lower():
            with open_dict(node):
                node.id, node.resume = run_id, "allow"


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
