"""logger=mlflow: a debug run's metrics, config and provenance read back with MLflow's own client; the store
is the run's own unless a tracking URI is given; without MLflow installed, one line names the extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from genlab import trackers
from genlab.errors import ConfigError, user_error
from tests.conftest import CONF, run_genlab

pytest.importorskip("mlflow", reason="MLflow is not installed: pip install 'genlab[mlflow]'")


def test_debug_run_logs_metrics_params_and_provenance_that_mlflow_reads_back(tmp_path: Path):
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    result = run_genlab(
        "train", "debug=fast", "logger=mlflow", "threads=1", "tags=[smoke]", f"hydra.run.dir={run_dir}",
        env={"MLFLOW_TRACKING_URI": ""},  # the default store, whatever the environment says
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow/mlflow.db")  # the run's own store
    (run,) = client.search_runs([client.get_experiment_by_name("genlab").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "mnist_vae"
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert history and history[-1].value == pytest.approx(record["metrics"]["val/loss"], rel=1e-6)
    assert history[-1].step == record["steps"] - 1  # Lightning's step of the last validation
    assert run.data.metrics["test/loss"] == pytest.approx(record["metrics"]["test/loss"], rel=1e-6)
    assert run.data.params["model/_target_"] == "genlab.models.vae.VAE"  # the resolved config
    tags = run.data.tags
    assert tags["genlab.command"] == record["command"] and tags["genlab.seed"] == "42"
    assert tags["mlflow.source.git.commit"] == record["git"]["commit"] or record["git"]["commit"] is None
    assert "smoke" in tags and tags["genlab.run_dir"] == str(run_dir)
    assert not (Path.cwd() / "mlruns").exists()  # nothing lands in the folder the command ran from


def test_tracking_uri_comes_from_the_config_then_the_environment_then_the_run_dir(
    tmp_path: Path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert trackers.mlflow_tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert trackers.mlflow_tracking_uri(tmp_path) == "http://tracking:5000"
    assert trackers.mlflow_tracking_uri(tmp_path, "sqlite:////shared/m.db") == "sqlite:////shared/m.db"


def _logger_node(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mnist_vae", "logger=mlflow", *overrides])
    GlobalHydra.instance().clear()
    return cfg.logger.mlflow


@pytest.mark.slow  # a new MLflow store runs its schema migrations: ~30 s on 2 busy cores
def test_a_shared_store_by_uri_holds_runs_with_the_run_records_provenance(tmp_path: Path):
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path}/shared/mlflow.db"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"command": f"genlab train seed={name}"}))
        node = _logger_node(f"logger.mlflow.tracking_uri={store}", f"logger.mlflow.run_name={name}")
        logger = instantiate(node, save_dir=str(tmp_path / name))
        logger.log_metrics({"val/loss": 1.0 if name == "a" else 2.0}, step=0)
        logger.finalize("success")
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs(
        [client.get_experiment_by_name("genlab").experiment_id], order_by=["metrics.`val/loss`"]
    )
    assert [(r.info.run_name, r.data.metrics["val/loss"]) for r in runs] == [("a", 1.0), ("b", 2.0)]
    assert [r.data.tags["genlab.command"] for r in runs] == ["genlab train seed=a", "genlab train seed=b"]


def test_without_mlflow_installed_one_line_names_the_extra(tmp_path: Path, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name)
    )
    with pytest.raises(Exception) as raised:  # Hydra wraps what the target raised
        instantiate(_logger_node(), save_dir=str(tmp_path))
    error = user_error(raised.value)
    assert isinstance(error, ConfigError)
    assert str(error) == "logger=mlflow needs MLflow, which is not installed: pip install 'genlab[mlflow]'"


def test_many_is_csv_tensorboard_and_wandb():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mnist_vae", "logger=many"])
    GlobalHydra.instance().clear()
    assert sorted(cfg.logger) == ["csv", "tensorboard", "wandb"]
    assert (
        cfg.logger.wandb._target_ == "genlab.trackers.wandb_logger"
    )  # offline by itself without credentials


@pytest.mark.slow  # two debug runs with a new MLflow store: ~2 min on 2 busy cores
def test_a_resumed_run_goes_on_logging_to_its_mlflow_run(tmp_path: Path):
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    common = ["train", "debug=fast", "logger=mlflow", "threads=1", f"hydra.run.dir={run_dir}"]
    env = {"MLFLOW_TRACKING_URI": ""}
    first = run_genlab(*common, "trainer.max_steps=2", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    more = run_genlab(*common, "trainer.max_steps=4", "resume=auto", env=env)  # a larger budget trains on
    assert more.returncode == 0, more.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("genlab").experiment_id])
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "train/loss")})
    assert steps == [0, 1, 2, 3], steps  # both parts' steps, in the one run
