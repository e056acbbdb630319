"""The packaged configs work from a non-editable install: a built wheel, run from an unrelated folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_wheel_ships_configs_and_trains_from_any_folder(tmp_path: Path):
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(wheels), str(REPO)], check=True, capture_output=True)
    (wheel,) = wheels.glob("genlab-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert "genlab/conf/train.yaml" in names and "genlab/conf/experiment/mnist_vae.yaml" in names

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    probe = "import genlab.config as c; print(c.conf_dir())"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert where.stdout.strip() == str(site / "genlab" / "conf"), where.stderr

    result = subprocess.run(
        [sys.executable, "-m", "genlab.cli", "train", "debug=fast", "trainer.max_steps=2", "test=false"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = (elsewhere / "outputs" / "train" / "runs").glob("*/run.json")
    assert json.loads(record.read_text())["status"] == "completed"
