"""The packaged configs work from a non-editable install: a built wheel, run from an unrelated folder."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONF, REPO


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


def _targets(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "_target_"] + [
            t for v in node.values() for t in _targets(v)
        ]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


def test_every_shipped_target_comes_with_a_plain_install():
    """`pip install genlab` runs every config: no `_target_` (Optuna's samplers, the joblib and submitit
    launchers) may live in an optional extra that the README would have to name."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_canonical(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]) for req in project["dependencies"]}
    owners = importlib.metadata.packages_distributions()
    missing = {}
    for path in sorted(CONF.rglob("*.yaml")):
        for target in _targets(yaml.safe_load(path.read_text())):
            top, _, rest = target.partition(".")
            if top == "genlab" or rest.startswith("genlab"):  # genlab itself, or its own Hydra plugin
                continue
            # a namespace package (hydra_plugins) is shared: its owner is the one holding the sub-package
            sub = "/".join(target.split(".")[:2])
            dists = [d for d in owners.get(top, []) if len(owners[top]) == 1 or _holds(d, sub)]
            if not any(_canonical(d) in core for d in dists):
                missing[target] = f"{path.relative_to(REPO)} (from {', '.join(dists) or '?'})"
    assert not missing, f"config targets outside the core dependencies: {missing}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _holds(dist: str, subpackage: str) -> bool:
    return any(str(f).startswith(f"{subpackage}/") for f in importlib.metadata.files(dist) or [])
