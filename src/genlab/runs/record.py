"""`run.json`: the record of one run (status, provenance, final metrics), always written atomically."""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from genlab.atomic import atomic_write

RECORD_NAME = "run.json"
# pruned: stopped early by a sweep's pruner (its metrics are from that step; compare never ranks it)
STATUSES = ("running", "completed", "pruned", "failed", "interrupted")


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temp file in the same folder, then rename: readers never see half a file."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding `path` (genlab's source by default); nulls outside git."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("genlab", "torch", "lightning", "hydra-core", "torchmetrics", "torch-fidelity"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")  # only described if the run already imported it
    if torch is not None:
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def command_line(task: str, overrides: list[str], config_flags: list[str] | None = None) -> str:
    """The command that runs this again, quoted for a POSIX shell: `genlab <task>`, the flags that chose the
    primary config (`--config-dir`, `-cp`, `-cn`: from this process's command line unless given), the overrides."""
    # imported here: `genlab compare` reads run records without loading OmegaConf
    from genlab.runs.resume import config_source_flags

    flags = config_source_flags(sys.argv[1:]) if config_flags is None else list(config_flags)
    return " ".join(["genlab", task, *map(shlex.quote, [*flags, *overrides])])


class RunRecord:
    """The run.json of one run directory; every update rewrites the whole file atomically."""

    def __init__(self, run_dir: str | Path, data: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RECORD_NAME
        self.data = data
        self._t0 = time.monotonic()

    @classmethod
    def start(
        cls,
        run_dir: str | Path,
        *,
        experiment: str,
        seed: int | None,
        overrides: list[str],
        task: str = "train",
        tags: list[str] | None = None,
        config_flags: list[str] | None = None,
    ) -> RunRecord:
        record = cls(
            run_dir,
            {
                "status": "running",
                "task": task,
                "experiment": experiment,
                "seed": seed,
                "overrides": list(overrides),
                "tags": list(tags or []),
                "command": command_line(task, overrides, config_flags),
                "run_dir": str(Path(run_dir).resolve()),
                "git": git_state(),
                "versions": package_versions(),
                "hardware": hardware(),
                "started": now(),
                "finished": None,
                "wall_time_s": None,
                "steps": None,
                "metrics": {},
                "best_checkpoint": None,
                "error": None,
            },
        )
        record.save()
        return record

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        *,
        checkpoint: str | None,
        step: int | None,
        overrides: list[str],
        config: str | None = None,
    ) -> RunRecord:
        """The record of a run continued in its own folder: running again, with the resume noted (`config`:
        where this part's composed config is, relative to the run dir; the first part's stays in .hydra/)."""
        record = cls.load(run_dir)
        resumes = list(record.data.get("resumes") or [])
        resumes.append(
            {
                "at": now(),
                "checkpoint": checkpoint,
                "step": step,
                "overrides": list(overrides),
                "config": config,
                "previous_status": record.data.get("status"),
            }
        )
        record._t0 -= float(record.data.get("wall_time_s") or 0.0)  # wall time counts every part of the run
        record.data.update(status="running", finished=None, error=None, resumes=resumes)
        record.save()
        return record

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord:
        path = Path(run_dir) / RECORD_NAME
        return cls(run_dir, json.loads(path.read_text()))

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def finish(self, status: str, **fields: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; expected one of {STATUSES}")
        self.update(
            status=status,
            finished=now(),
            wall_time_s=round(time.monotonic() - self._t0, 1),
            **fields,
        )

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)
