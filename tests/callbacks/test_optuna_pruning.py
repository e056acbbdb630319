"""A run stopped by a sweep's pruner is recorded as `pruned` (with its step), and compare never ranks it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from omegaconf import OmegaConf

from genlab.runs.compare import compare, load_runs
from hydra_plugins.genlab_optuna_sweeper.sweeper import GenlabOptunaSweeper
from tests.conftest import run_genlab
from tests.runs.test_compare import make_run

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_pruned_run_is_recorded_as_pruned_at_its_step(tmp_path: Path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "upper": 0.0}  # any positive loss is pruned
    study = optuna.create_study(
        study_name="s", storage=storage, pruner=optuna.pruners.ThresholdPruner(upper=0.0)
    )
    trial = study.ask()
    sweeper = GenlabOptunaSweeper(1, 1, "min", "s", storage, None, {}, pruner=pruner)
    sweeper.config = OmegaConf.create(
        {"objective": {"metric": "val/loss"}, "hydra": {"sweeper": {"pruner": pruner}}}
    )
    # the override the sweeper gives each trial: it adds the pruning callback
    (override,) = sweeper._pruning_overrides(trial, pruner=object())

    run_dir = tmp_path / "run"
    result = run_genlab("train", "debug=fast", "~callbacks.sample_grid", override, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]

    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "pruned" and record["pruned_at_step"] == record["steps"] == 4
    assert "val/loss" in record["metrics"]
    assert not any(name.startswith("test/") for name in record["metrics"])  # a pruned run is not tested
    assert study.trials[0].intermediate_values.keys() == {4}


def test_compare_shows_pruned_runs_but_never_ranks_them(tmp_path: Path):
    make_run(tmp_path, "0", status="completed", lr=1e-3, metrics={"val/loss": 0.5})
    make_run(
        tmp_path, "1", status="pruned", lr=1e-2, metrics={"val/loss": 0.1}
    )  # better number, stopped early
    comparison = compare(load_runs([str(tmp_path)]))
    assert [(run.name, run.status, comparison.rank(run)) for run in comparison.runs] == [
        ("0", "completed", 1),
        ("1", "pruned", None),
    ]
