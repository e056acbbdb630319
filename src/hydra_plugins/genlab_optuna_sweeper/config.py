"""The `hydra/sweeper: genlab_optuna` config node, registered when Hydra scans its plugins.

No `from __future__ import annotations` here: Hydra executes plugin modules outside `sys.modules`, where
dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class GenlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.genlab_optuna_sweeper.sweeper.GenlabOptunaSweeper"
    # the sweeper builds sampler and pruner itself: a resumed study's sampler is seeded anew (see sweeper.py)
    _recursive_: bool = False
    # total trials of the study, those of earlier (interrupted) runs of the same sweep included
    n_trials: int = 20
    # trials asked together and handed to the launcher as one batch (the joblib launcher runs them in parallel)
    n_jobs: int = 1
    # min/max (genlab's `objective.mode`) or minimize/maximize
    direction: str = "${objective.mode}"
    study_name: str = "${experiment_name}"
    # in the sweep dir, so re-running the same command (same hydra.sweep.dir) resumes the study; null: in memory.
    # Across machines (many SLURM jobs, several sweep processes on one study): a database server,
    # postgresql://user@host:5432/db (pip install 'genlab[postgres]'), or a journal file on a shared
    # filesystem, journal:///<path> (e.g. journal:////shared/sweeps/vae.log): see genlab/study_storage.py
    storage: Any = "sqlite:///${hydra.sweep.dir}/optuna.db"
    # any optuna sampler by `_target_`; TPE with a seed makes the sequence of asked trials repeatable. A
    # resumed study builds it with seed + (trials already in the study), so it does not replay earlier points
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    # optional Optuna pruner by `_target_` (e.g. optuna.pruners.MedianPruner): each trial then reports the
    # objective after every validation and stops early when the pruner says so (recorded as PRUNED)
    pruner: Any = None
    # search space: config key -> Hydra sweep syntax, e.g. `optimizer.lr: tag(log, interval(1e-4, 1e-2))`,
    # `model.latent_dim: choice(8, 16)`, `model.net.base_channels: range(16, 65, 16)`; plain values are fixed
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="genlab_optuna", node=GenlabOptunaSweeperConf, provider="genlab"
)
