"""Trackers: wandb goes offline by itself without credentials and never prompts; csv + tensorboard write files
without importing wandb; the jobs of one sweep share a wandb group; run.json metadata reaches the run config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genlab import trackers
from tests.conftest import REPO

CREDENTIAL_VARS = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL", "WANDB_MODE")


@pytest.fixture
def no_credentials(monkeypatch, tmp_path: Path) -> Path:
    """A HOME without .netrc and no wandb variables; returns that HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    return home


def test_credentials_come_from_env_or_netrc_for_the_wandb_host(no_credentials: Path, monkeypatch):
    assert trackers.wandb_credentials() is None
    assert trackers.wandb_mode() == "offline"

    netrc = no_credentials / ".netrc"
    netrc.write_text("machine example.com login user password secret\n")
    netrc.chmod(0o600)
    assert trackers.wandb_credentials() is None  # a key for another host is no key for wandb

    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert trackers.wandb_credentials() == str(netrc)
    assert trackers.wandb_mode() == "online"

    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert trackers.wandb_credentials() == "WANDB_API_KEY"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's explicit choice wins over credentials
    assert trackers.wandb_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert trackers.wandb_mode() == "offline"


def test_sweep_jobs_share_a_group_and_the_run_record_goes_into_the_config(
    no_credentials: Path, tmp_path: Path, monkeypatch
):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {
        "status": "running",
        "seed": 7,
        "git": {"commit": "abc", "dirty": False},
        "versions": {"torch": "2"},
    }
    (run_dir / "run.json").write_text(json.dumps(record))

    assert trackers.sweep_group() is None  # a single run (or no Hydra at all) has no group
    hydra = {
        "mode": RunMode.MULTIRUN,
        # sweep.dir is left to ${now:} at resolution time; the job's output dir holds the sweep's real name
        "sweep": {"dir": "outputs/m/${now:%H-%M-%S-%f}", "subdir": "3"},
        "runtime": {"output_dir": "/abs/outputs/m/2026-01-02_03-04-05/3"},
    }
    sweep = OmegaConf.create({"hydra": hydra})
    monkeypatch.setattr(HydraConfig.instance(), "cfg", sweep)
    logger = trackers.wandb_logger(save_dir=str(run_dir), name="exp", tags=["a"])

    init = logger._wandb_init  # what wandb.init will get; building the logger starts no wandb run
    assert init["group"] == "2026-01-02_03-04-05"
    assert logger._offline is True  # no credentials
    assert init["config"]["run"] == {"seed": 7, "git": record["git"], "versions": record["versions"]}
    assert trackers.wandb_logger(save_dir=str(run_dir), group="mine")._wandb_init["group"] == "mine"


def _train(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genlab.cli", "train", "debug=fast", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,  # a login prompt would read EOF and fail instead of waiting
        capture_output=True,
        text=True,
        timeout=240,
    )


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS and k != "HYDRA_FULL_ERROR"}
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


def test_wandb_without_credentials_runs_offline_without_prompting(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    run_dir = tmp_path / "run"
    result = _train(["logger=wandb", f"hydra.run.dir={run_dir}"], _clean_env(home), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"

    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    records = list(offline[0].glob("run-*.wandb"))
    assert records and records[0].stat().st_size > 0
    data = records[0].read_bytes()
    assert b"genlab.models.vae.VAE" in data  # the resolved config
    assert b'"versions"' in data and b'"git"' in data  # run.json's provenance
    assert not (home / ".netrc").exists()  # nothing was written for a login


@pytest.mark.slow  # a second ~20 s training; the wandb test above is the one the default suite keeps
def test_csv_and_tensorboard_write_files_without_importing_wandb(tmp_path: Path):
    # a wandb that records being imported: neither logger, nor anything else in the run, may import it
    fake = tmp_path / "fake" / "wandb"
    fake.mkdir(parents=True)
    marker = tmp_path / "wandb_was_imported"
    (fake / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('fake wandb')\n"
    )
    env = _clean_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake.parent), env.get("PYTHONPATH")]))
    run_dir = tmp_path / "run"

    result = _train(["logger=[csv,tensorboard]", f"hydra.run.dir={run_dir}"], env, cwd=REPO)  # many has wandb
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists(), "wandb was imported by a run that does not use it"

    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/loss" in header and "step" in header
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_next_sweep_job_closes_the_previous_jobs_wandb_run(tmp_path: Path, monkeypatch):
    """Jobs of a multirun share one process: without this, Lightning attaches job 2 to job 1's wandb run."""
    finished: list[int] = []
    fake = types.SimpleNamespace(run=object(), finish=lambda exit_code=0: finished.append(exit_code))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    previous = tmp_path / "0"
    previous.mkdir()
    (previous / "run.json").write_text(json.dumps({"status": "failed"}))
    monkeypatch.setattr(trackers, "_last_run_dir", previous)
    trackers.finish_previous_run()
    assert finished == [1]  # the failed job is closed as failed

    (previous / "run.json").write_text(json.dumps({"status": "completed"}))
    trackers.finish_previous_run()
    fake.run = None  # no open run: nothing to close
    trackers.finish_previous_run()
    assert finished == [1, 0]
