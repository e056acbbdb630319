"""What a failed resume puts back: the files of a run dir as they were before the attempt."""

from __future__ import annotations

import logging
from pathlib import Path

# a resume that fails before training goes on puts back every file of the run dir outside these folders
# (checkpoints are only read; each attempt's own .hydra/resume-<time>/ stays) and removes what it added
_NOT_SNAPSHOT = ("checkpoints",)
_SNAPSHOT_MAX_BYTES = 64 * 2**20  # a larger file (a wandb run's) is only checked for being new


class RunDirSnapshot:
    """The run dir's files (their bytes) when taken; `restore()` makes the folder so again."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.files = {
            path: path.read_bytes() if path.stat().st_size <= _SNAPSHOT_MAX_BYTES else None
            for path in _run_files(run_dir)
        }

    def restore(self) -> bytes:
        """Put the run dir's files back as they were and remove those added since; returns what was added to
        train.log meanwhile. The log file is closed first: nothing more is written there."""
        from genlab.atomic import atomic_write

        log_path = self.run_dir / "train.log"
        detach_file_logs(self.run_dir)
        before = self.files.get(log_path) or b""
        added = log_path.read_bytes()[len(before) :] if log_path.is_file() else b""
        attempt = hydra_output_config()
        for path in _run_files(self.run_dir):
            if path not in self.files and not (attempt and path.is_relative_to(attempt.parent)):
                path.unlink()
        for path, content in self.files.items():
            if content is not None and (not path.is_file() or path.read_bytes() != content):
                with atomic_write(path) as f:
                    f.write(content)
        return added


def _run_files(run_dir: Path) -> list[Path]:
    return [
        path
        for path in run_dir.rglob("*")
        if path.is_file() and path.relative_to(run_dir).parts[0] not in _NOT_SNAPSHOT
    ]


def detach_file_logs(run_dir: Path) -> None:
    """Close the logging handlers that write into `run_dir` (Hydra's train.log): the run dir is left alone."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        filename = getattr(handler, "baseFilename", None)
        if filename and Path(filename).absolute().is_relative_to(run_dir.absolute()):
            root.removeHandler(handler)
            handler.close()


def hydra_output_config() -> Path | None:
    """Where Hydra wrote this job's config (`<output_subdir>/config.yaml`), if it did."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:  # not under Hydra
        return None
    if not hydra_cfg.output_subdir:
        return None
    return Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir / "config.yaml"
