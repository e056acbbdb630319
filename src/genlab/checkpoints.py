"""Checkpoint files: written atomically, read safely, and found again for `resume=auto`.

Lightning writes a checkpoint through fsspec, whose local "transaction" stages it in the system temp folder
and then moves it; across filesystems that move is a copy, and a kill during it leaves half a checkpoint
under the final name. Here a checkpoint is written to a hidden temp file beside its final path, flushed to
disk and renamed over it: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from genlab.atomic import atomic_write
from genlab.errors import CheckpointError

TRUST_HINT = "pass trust_checkpoint=true only if you trust where it came from"


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with an atomic local save and a one-line error for unsafe or damaged files."""

    def __init__(self, trust: bool = False) -> None:
        self.trust = trust  # allow checkpoints that need arbitrary unpickling (weights_only=False)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        save_atomic(checkpoint, Path(path))

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None):
        return load(Path(path), map_location=map_location or "cpu", trust=self.trust)


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def load(path: Path, map_location: Any = "cpu", trust: bool = False) -> dict[str, Any]:
    """Load with `weights_only=True` unless trusted; a damaged or unsafe file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of a .ckpt file")
    if not is_complete(path):
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a torch checkpoint (an interrupted copy?): "
            "use another checkpoint of the run"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))  # torch names the first class it refused
        what = f"an object of class {found.group(1)}" if found else "Python objects"
        raise CheckpointError(
            f"checkpoint {path} holds {what}, beyond tensors and plain values; {TRUST_HINT}"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read ({error}); use another checkpoint") from None


def is_complete(path: Path) -> bool:
    """A torch checkpoint is a zip archive; a truncated one has lost its central directory at the end."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def newest_complete(folder: Path) -> Path | None:
    """The complete `*.ckpt` in `folder` furthest into training (its stored global step; the newest file
    among equals), so copies that lost their timestamps still resume from the latest state. Hidden temp
    files of a save are skipped."""
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.glob("*.ckpt") if not p.name.startswith(".") and p.is_file()]
    complete = [p for p in candidates if is_complete(p)]

    def progress(path: Path) -> tuple[int, int]:
        step = resume_info(path).get("global_step")
        return (-1 if step is None else int(step), path.stat().st_mtime_ns)

    return max(complete, key=progress, default=None)


def remove_unfinished_saves(folder: Path) -> list[Path]:
    """Delete the hidden temp files that saves killed half-way left in `folder`; returns them."""
    stale = [p for p in folder.glob(".*.ckpt.*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def resume_info(path: Path) -> dict[str, Any]:
    """Where a checkpoint stands, read memory-mapped (the weights are not read): its global step and the
    ids of the loggers that wrote it, and the metrics row of its step still to be logged. Empty if unreadable."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or untrusted: loading it for real will say why
        return {}
    return {
        "global_step": checkpoint.get("global_step"),
        "logger_ids": dict(checkpoint.get("genlab_logger_ids") or {}),
        "pending_rows": list(checkpoint.get("genlab_pending_rows") or []),
    }


def init_weights(module: torch.nn.Module, source: Path, trust: bool = False) -> tuple[Path, int | None]:
    """Load only the weights of `source` (a checkpoint, or a run dir: its best checkpoint, else last.ckpt)
    into `module`, which must have the same architecture; returns the checkpoint used and its step. Weight
    averages (EMA) restart: their first update copies the weights being trained."""
    from genlab.runs.loading import locate_path

    if not source.exists():
        raise CheckpointError(
            f"init_from={source}: no such file or folder; give a .ckpt file or a run folder"
        )
    _, path = locate_path(source)
    checkpoint = load(path, trust=trust)
    theirs = checkpoint.get("state_dict")
    if not isinstance(theirs, dict):
        raise CheckpointError(f"init_from={path}: not a Lightning checkpoint (no state_dict)")
    ours = module.state_dict()
    problems = [f"missing {key}" for key in ours if key not in theirs]
    problems += [f"unexpected {key}" for key in theirs if key not in ours]
    problems += [
        f"{key} has shape {tuple(theirs[key].shape)} there but {tuple(value.shape)} here"
        for key, value in ours.items()
        if key in theirs and tuple(theirs[key].shape) != tuple(value.shape)
    ]
    if problems:
        raise CheckpointError(
            f"init_from={path} does not fit {type(module).__name__}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + "; init_from needs the same nets and sizes (model.*) as the run it comes from"
        )
    module.load_state_dict(theirs)
    # a weight average (EMA) starts afresh from the loaded weights, warm-up included: carried over, its
    # horizon of ~1/(1-decay) steps would hide a short fine-tune's progress from sampling and evaluation
    for name, buffer in module.named_buffers():
        if name.endswith("n_averaged"):
            buffer.zero_()
    return path, checkpoint.get("global_step")
