"""genlab's Optuna sweeper: search-space parsing, failed trials, and a real resumable sweep in a subprocess."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.genlab_optuna_sweeper.search_space import parse_search_space, to_override
from hydra_plugins.genlab_optuna_sweeper.sweeper import _tell
from tests.conftest import CONF, run_genlab

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_search_space_from_hydra_sweep_syntax():
    params = {
        "optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        "model.ema_decay": "interval(0.9, 0.999)",
        "model.net.n_layer": "int(interval(2, 6))",
        "model.net.base_channels": "range(16, 65, 16)",
        "model.net.latent_dim": "choice(8, 16)",
        "model.recon_loss": "choice(bce, mse)",
        "seed": 3,  # a plain value: every trial gets it
    }
    arguments = ["trainer.max_steps=5", "+extra=choice(1,2)", "model.recon_loss=mse", "seed=choice(1,2)"]
    space, fixed = parse_search_space(params, arguments)
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["model.ema_decay"] == FloatDistribution(0.9, 0.999)
    assert space["model.net.n_layer"] == IntDistribution(2, 6)
    assert space["model.net.base_channels"] == IntDistribution(16, 64, step=16)
    assert space["model.net.latent_dim"] == CategoricalDistribution([8, 16])
    assert space["+extra"] == CategoricalDistribution([1, 2])
    assert space["seed"] == CategoricalDistribution([1, 2])  # the command line wins over params
    assert fixed == ["trainer.max_steps=5", "model.recon_loss=mse"]


@pytest.mark.parametrize("value", [1.5e-05, 0.1, 3, True, "bce", "a b,c"])
def test_override_parses_back_to_the_same_value(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([to_override("key", value)])
    assert override.value() == value and type(override.value()) is type(value)


def _job(status: JobStatus, value, output_dir: Path) -> JobReturn:
    job = JobReturn(
        status=status, hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(output_dir)}}})
    )
    job.return_value = value  # a failed job holds its exception, which `return_value` raises
    return job


def test_raised_nan_or_missing_objective_is_a_failed_trial_with_its_reason(tmp_path: Path):
    study = optuna.create_study(direction="minimize")
    (tmp_path / "run.json").write_text(json.dumps({"status": "failed", "error": "DataError: no such file x"}))
    jobs = [
        _job(JobStatus.COMPLETED, 0.5, tmp_path / "ok"),
        _job(JobStatus.FAILED, RuntimeError("CUDA out of memory"), tmp_path / "raised"),
        _job(JobStatus.COMPLETED, math.nan, tmp_path),
        _job(JobStatus.COMPLETED, None, tmp_path / "none"),
    ]
    for job in jobs:
        _tell(study, study.ask({"x": FloatDistribution(0, 1)}), job)
    ok, raised, nan, none = study.trials
    assert ok.state == TrialState.COMPLETE and ok.value == 0.5
    assert [t.state for t in (raised, nan, none)] == [TrialState.FAIL] * 3
    assert raised.user_attrs["fail_reason"] == "RuntimeError: CUDA out of memory"
    assert nan.user_attrs["fail_reason"] == "objective was nan (DataError: no such file x)"
    assert none.user_attrs["fail_reason"] == "objective was None"
    assert ok.user_attrs["output_dir"] == str(tmp_path / "ok")


def _trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="mnist_vae", storage=f"sqlite:///{sweep_dir}/optuna.db").trials


def test_sweep_records_trials_fails_bad_ones_and_resumes(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    # latent_dim -1 cannot build the net: those trials crash, the others train. On the command line, this
    # search space replaces the one of hparams_search
    sweep = (
        "train", "-m", "hparams_search=mnist_vae_optuna", "debug=fast", "threads=1",
        "model.net.latent_dim=choice(4,-1)", "hydra.sweeper.sampler.seed=0", f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    result = run_genlab(*sweep, "hydra.sweeper.n_trials=3")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _trials(sweep_dir)
    assert [t.number for t in trials] == [0, 1, 2]

    def check(trial: optuna.trial.FrozenTrial) -> None:
        record = json.loads((sweep_dir / str(trial.number) / "run.json").read_text())
        if trial.params["model.net.latent_dim"] == -1:
            assert trial.state == TrialState.FAIL and record["status"] == "failed"
            assert "must be a positive integer" in trial.user_attrs["fail_reason"]
        else:
            assert trial.state == TrialState.COMPLETE and record["status"] == "completed"
            assert trial.value == record["metrics"]["val/loss"]
        assert trial.user_attrs["output_dir"] == str(sweep_dir / str(trial.number))

    for trial in trials:
        check(trial)
    assert {t.state for t in trials} == {
        TrialState.COMPLETE,
        TrialState.FAIL,
    }  # sampler seed 0 draws 4, -1, -1

    result = run_genlab(*sweep, "hydra.sweeper.n_trials=4")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = _trials(sweep_dir)
    assert [t.number for t in resumed] == [0, 1, 2, 3]
    assert [t.params for t in resumed[:3]] == [t.params for t in trials]  # untouched by the resume
    check(resumed[3])
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_every_hparams_search_composes_and_searches_existing_keys(name: str):
    cfg = _compose([f"hparams_search={name}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("GenlabOptunaSweeper")
    assert cfg.experiment_name in name and sweeper.study_name == cfg.experiment_name
    assert sweeper.direction in ("min", "max") and cfg.objective.metric
    space, fixed = parse_search_space(OmegaConf.to_container(sweeper.params), [])
    assert len(space) >= 2 and not fixed
    for key in space:  # a typo in a key would silently add a config entry nothing reads
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key


@pytest.mark.parametrize(
    ("launcher", "schema"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.config.JobLibLauncherConf"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.config.SlurmQueueConf"),
    ],
)
def test_launcher_configs_replace_the_plugins_own_with_every_field(launcher: str, schema: str):
    import dataclasses
    import importlib

    module, _, name = schema.rpartition(".")
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    ours = OmegaConf.load(CONF / "hydra" / "launcher" / f"{launcher}.yaml")
    assert set(ours) == fields  # the launchers read every field, so our file must name them all
    composed = _compose([f"hydra/launcher={launcher}"]).hydra.launcher
    assert OmegaConf.to_container(composed) == OmegaConf.to_container(ours)  # our file, not the plugin's


def test_pruned_run_stops_and_is_told_pruned(tmp_path: Path):
    import torch
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate

    from hydra_plugins.genlab_optuna_sweeper.sweeper import GenlabOptunaSweeper

    storage = f"sqlite:///{tmp_path}/optuna.db"
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "upper": 1.0}
    study = optuna.create_study(study_name="s", storage=storage, pruner=instantiate(pruner))
    trial = study.ask({"x": FloatDistribution(0, 1)})
    sweeper = GenlabOptunaSweeper(1, 1, "min", "s", storage, None, {}, pruner=pruner)
    sweeper.config = OmegaConf.create(
        {"objective": {"metric": "val/loss"}, "hydra": {"sweeper": {"pruner": pruner}}}
    )

    # the override the sweeper gives the trial builds the callback, whose pruner comes from the same config
    (override,) = sweeper._pruning_overrides(trial, pruner=object())
    (parsed,) = OverridesParser.create().parse_overrides([override])
    assert parsed.key_or_group == "callbacks.optuna_pruning"
    callback = instantiate(parsed.value())
    assert (callback.trial_id, callback.storage, callback.monitor) == (trial._trial_id, storage, "val/loss")

    for loss, stops in ((0.5, False), (2.0, True)):  # above the threshold: pruned
        trainer = SimpleNamespace(
            sanity_checking=False, is_global_zero=True, global_step=4 if stops else 2, should_stop=False,
            callback_metrics={"val/loss": torch.tensor(loss)}, strategy=SimpleNamespace(broadcast=lambda x, src: x),
        )  # fmt: skip
        callback.on_validation_end(trainer, None)
        assert trainer.should_stop is stops
    _tell(study, trial, _job(JobStatus.COMPLETED, 2.0, tmp_path))
    (frozen,) = study.trials
    assert frozen.state == TrialState.PRUNED and frozen.intermediate_values == {2: 0.5, 4: 2.0}
    assert frozen.user_attrs["pruned_at_step"] == 4


def test_trials_left_running_by_an_interrupted_sweep_are_closed_and_not_counted(tmp_path: Path):
    from hydra_plugins.genlab_optuna_sweeper.sweeper import INTERRUPTED, _close_interrupted, _finished

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s")
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()  # the sweep was killed while this one trained: its run.json still says running
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "run.json").write_text(json.dumps({"status": "running"}))
    _close_interrupted(study, tmp_path)
    done, failed, interrupted = study.trials
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["fail_reason"] == INTERRUPTED
    assert _finished(study) == 2  # a resumed sweep redoes the interrupted slot
    assert json.loads((tmp_path / "2" / "run.json").read_text())["status"] == "interrupted"


def test_a_resumed_study_asks_new_points_not_its_first_ones_again(tmp_path: Path):
    from hydra_plugins.genlab_optuna_sweeper.sweeper import _build

    sampler = OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": 0})
    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "latent_dim": CategoricalDistribution([4, 8, 16])}
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="s", sampler=_build(sampler))
    first = []
    for _ in range(2):
        trial = study.ask(space)
        first.append(trial.params)
        study.tell(trial, 1.0)
    # the sweep is run again (after a kill): the same seeded sampler config, built for a study of 2 trials
    resumed = optuna.load_study(storage=storage, study_name="s")
    resumed.sampler = _build(sampler, seed_offset=len(resumed.trials))
    later = [resumed.ask(space).params for _ in range(2)]
    assert not any(point in first for point in later), (first, later)
    # and the offset is the same every time: a resumed sweep is as repeatable as a fresh one
    again = _build(sampler, seed_offset=2)
    fresh = optuna.create_study(sampler=again)
    assert fresh.ask(space).params["lr"] == pytest.approx(
        optuna.create_study(sampler=_build(sampler, seed_offset=2)).ask(space).params["lr"]
    )
