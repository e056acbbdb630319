"""The best checkpoint by a monitored metric, in a run dir that may have been copied or moved.

A ModelCheckpoint stores absolute paths (its folder, the best and top-k files). Resumed from a copied run
dir, Lightning's would keep pointing at the original's files (and forget its top-k ranking); this one
moves the stored paths into its own folder when the files are there, so a copy continues with its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose restored state follows the run dir (conf/callbacks/default.yaml uses it)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(rebased(state_dict, self.dirpath))


def rebased(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """`state` with the paths of another folder moved to `dirpath`, when every file named is there."""
    stored = state.get("dirpath")
    if not dirpath or not stored or str(Path(stored).absolute()) == str(Path(dirpath).absolute()):
        return state

    def here(path: Any) -> Any:
        return str(Path(dirpath) / Path(path).name) if isinstance(path, str) and path else path

    paths = [state.get("best_model_path"), state.get("last_model_path"), state.get("kth_best_model_path")]
    paths += list(state.get("best_k_models") or {})
    if not all((Path(dirpath) / Path(p).name).is_file() for p in paths if isinstance(p, str) and p):
        return state  # not a copy of this folder: Lightning's own handling (it warns)
    state = dict(state, dirpath=dirpath)
    for key in ("best_model_path", "last_model_path", "kth_best_model_path"):
        state[key] = here(state.get(key))
    state["best_k_models"] = {here(k): v for k, v in (state.get("best_k_models") or {}).items()}
    return state
