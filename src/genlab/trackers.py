"""Experiment trackers that never stop to ask for anything: a Weights & Biases logger that goes offline by itself
when no credentials are found, groups the jobs of one sweep, and carries the run record into the run config;
an MLflow logger that keeps a store in the run dir unless given a tracking server.

Importing this module is cheap; wandb and mlflow are imported by Lightning only when a run uses them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import netrc
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from genlab.errors import ConfigError
from genlab.runs.record import RECORD_NAME

# run.json fields worth having beside the resolved config in the tracker (the rest is status or metrics)
RECORD_FIELDS = ("experiment", "seed", "overrides", "command", "git", "versions", "hardware", "started")


def wandb_credentials() -> str | None:
    """Where wandb would find an API key without asking (`WANDB_API_KEY`, an identity token file, or a netrc
    entry for the W&B host), or None when `wandb.init` would have to prompt for a login."""
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    paths = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for path in (Path(p).expanduser() for p in paths):
        try:
            if path.is_file() and netrc.netrc(path).authenticators(host):
                return str(path)
        except (netrc.NetrcParseError, OSError):
            continue  # an unreadable netrc is no credential; wandb would warn and prompt
    return None


def wandb_mode() -> str:
    """'disabled' or 'offline' when WANDB_MODE says so, else 'online' with credentials and 'offline' without."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env == "disabled":
        return "disabled"
    if env in ("offline", "dryrun"):
        return "offline"
    return "online" if wandb_credentials() else "offline"


def sweep_group() -> str | None:
    """In a Hydra multirun, the sweep folder's name (shared by all its jobs); None in a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    # the job's output dir is <sweep dir>/<subdir>, fixed when the job started; re-resolving `sweep.dir` here
    # would call ${now:...} again and could give each job its own time
    job_dir = Path(hydra.runtime.output_dir)
    depth = len(Path(str(hydra.sweep.subdir)).parts)
    return job_dir.parents[depth - 1].name if depth else job_dir.name


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The run's run.json (the entry point writes it before building loggers); {} when absent or unreadable."""
    try:
        record = json.loads((Path(run_dir) / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def record_metadata(run_dir: str | Path) -> dict[str, Any]:
    """The provenance fields of the run's run.json."""
    record = read_record(run_dir)
    return {key: record[key] for key in RECORD_FIELDS if key in record}


_last_run_dir: Path | None = None  # run dir of the wandb run this process started last


def finish_previous_run() -> None:
    """Close the wandb run of the previous job of a multirun launched in this same process.

    Lightning's WandbLogger would otherwise attach the next job to it (one wandb run for the whole sweep). The
    exit code follows the previous job's run.json, so a failed job does not show as finished well in wandb.
    """
    wandb = sys.modules.get("wandb")  # only if some logger already imported it: no import cost otherwise
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    status = read_record(_last_run_dir).get("status") if _last_run_dir else None
    wandb.finish(exit_code=0 if status == "completed" else 1)


def wandb_logger(
    *,
    save_dir: str,
    project: str = "genlab",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    log_model: bool | str = False,
    **kwargs: Any,
) -> Any:
    """Lightning's WandbLogger writing under `save_dir/wandb/`.

    offline: None picks by credentials (see `wandb_mode`), so a run never waits at a login prompt; true/false
        forces it. group: None puts the jobs of one multirun in a group named after the sweep folder.
    The run record's provenance (git commit, package versions, hardware, overrides) goes into the wandb run
    config under `run`; the entry point adds the resolved config through `log_hyperparams`.
    """
    from lightning.pytorch.loggers import WandbLogger

    finish_previous_run()
    mode = wandb_mode() if offline is None else ("offline" if offline else "online")
    if mode == "disabled":
        kwargs["mode"] = "disabled"  # WandbLogger would overwrite WANDB_MODE with dryrun if told offline
    config = {**kwargs.pop("config", {}), "run": record_metadata(save_dir)}
    global _last_run_dir
    _last_run_dir = Path(save_dir)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        name=name,
        group=group if group is not None else sweep_group(),
        tags=list(tags or []),
        offline=mode == "offline",
        log_model=False if mode == "offline" else log_model,  # checkpoints cannot be uploaded offline
        config=config,
        **kwargs,
    )


MLFLOW_EXTRA = "pip install 'genlab[mlflow]'"


def mlflow_tracking_uri(save_dir: str | Path, tracking_uri: str | None = None) -> str:
    """Where the run logs: `tracking_uri` if given, else MLFLOW_TRACKING_URI, else a SQLite store of its own in
    `<save_dir>/mlflow/mlflow.db` (MLflow 3 refuses a plain-folder store without an opt-out)."""
    if tracking_uri:
        return str(tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(save_dir) / 'mlflow' / 'mlflow.db').absolute()}"


def mlflow_logger(
    *,
    save_dir: str,
    tracking_uri: str | None = None,
    experiment_name: str = "genlab",
    run_name: str | None = None,
    tags: list[str] | None = None,
    log_model: bool | str = False,
    artifact_location: str | None = None,
    **kwargs: Any,
) -> Any:
    """Lightning's MLFlowLogger, logging to `mlflow_tracking_uri(save_dir, tracking_uri)`.

    The run is tagged with the run record's provenance (`mlflow.source.git.commit`, `genlab.command`,
    `genlab.run_dir`, `genlab.seed`), `genlab.sweep` (the sweep folder, shared by a multirun's jobs) and each of
    genlab's `tags` as a tag of its own; the entry point adds the resolved config through `log_hyperparams`.
    With the default store, artifacts (`log_model`) go to `<save_dir>/mlflow/artifacts`.
    """
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(f"logger=mlflow needs MLflow, which is not installed: {MLFLOW_EXTRA}")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException

    for name in ("mlflow", "alembic"):  # a new SQLite store prints its schema migrations, line by line
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = mlflow_tracking_uri(save_dir, tracking_uri)
    if artifact_location is None and not tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        artifact_location = str((Path(save_dir) / "mlflow" / "artifacts").absolute())
    record = read_record(save_dir)
    run_tags = {tag: "" for tag in tags or []}
    run_tags.update(
        {
            "mlflow.source.name": "genlab",
            "mlflow.source.git.commit": (record.get("git") or {}).get("commit"),
            "genlab.command": record.get("command"),
            "genlab.run_dir": str(Path(save_dir).absolute()),
            "genlab.seed": record.get("seed"),
            "genlab.sweep": sweep_group(),
        }
    )
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MLFlowLogger(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            tags={key: str(value) for key, value in run_tags.items() if value is not None},
            log_model=log_model,
            artifact_location=artifact_location,
            **kwargs,
        )
    except MlflowException as error:  # an unusable store (MLflow 3 refuses plain folders); first line only
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: {reason} (give an http(s):// server or a sqlite:/// database)"
        ) from None
