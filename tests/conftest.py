"""Shared test helpers: composing the packaged configs and running `genlab` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests run two at a time (pytest -n 2) on small tensors: one thread each beats two fighting for two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def run_genlab(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run the `genlab` CLI as a user would, in a fresh interpreter; returns the CompletedProcess."""
    full_env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "genlab.cli", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def finished_run(run_dir: Path, *overrides: str) -> Path:
    """A completed `genlab train` run in `run_dir`; the calling test fails if training does not finish."""
    result = run_genlab("train", *overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Never the user's ~/.cache/genlab: a trained classifier there would switch FID on in every test run."""
    os.environ["GENLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("genlab-cache"))
    # nor the user's personal overrides (~/.config/genlab/local/default.yaml): an empty config folder
    os.environ["GENLAB_CONFIG_DIR"] = str(tmp_path_factory.mktemp("genlab-config"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
