"""Where configs come from besides the packaged tree: a user's own primary config (`-cp DIR -cn NAME`), extra
folders (`--config-dir`), and personal overrides in `local/default.yaml`; run.json's command keeps these flags."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from genlab import config
from genlab.runs.record import command_line
from tests.conftest import CONF, run_genlab

# a user's own primary config: genlab's `train` with their choices on top (no hydra.searchpath needed)
PRIMARY = """\
defaults:
  - train
  - override data: digits
  - _self_
experiment_name: mine
seed: 3
"""
# an option of their own, in an extra config folder
EXPERIMENT = """\
# @package _global_
model:
  beta: 0.5
tags: [extra]
"""


def _user_configs(root: Path) -> tuple[Path, Path]:
    (root / "mine").mkdir(parents=True)
    (root / "mine" / "my.yaml").write_text(PRIMARY)
    (root / "extra" / "experiment").mkdir(parents=True)
    (root / "extra" / "experiment" / "tiny.yaml").write_text(EXPERIMENT)
    return root / "mine", root / "extra"


def test_own_primary_config_trains_and_its_recorded_command_composes_it_again(tmp_path: Path):
    _user_configs(tmp_path)
    run_dir = tmp_path / "run"
    # relative folders, as a user types them in their project folder
    result = run_genlab(
        "train", "-cp", "mine", "-cn", "my", "--config-dir=extra", "experiment=tiny", "debug=fast", "test=false",
        "threads=1", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    stored = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert (stored.experiment_name, stored.seed, stored.data.dataset) == ("mine", 3, "digits")
    assert (stored.model.beta, list(stored.tags)) == (0.5, ["extra"])

    command = shlex.split(record["command"])
    assert command[:8] == [
        "genlab", "train", "-cp", str(tmp_path / "mine"), "-cn", "my",
        f"--config-dir={tmp_path / 'extra'}", "experiment=tiny",
    ]  # fmt: skip
    # copied into a shell elsewhere, the command composes the very config the run trained with
    again = run_genlab(*command[1:], "--cfg", "job", cwd=CONF)
    assert again.returncode == 0, again.stderr[-3000:]
    assert OmegaConf.create(again.stdout) == stored


def test_command_line_keeps_the_config_flags_and_quotes_for_a_shell():
    line = command_line("train", ["tags=[a,b c]", "seed=1"], ["-cd", "/my configs", "-cn", "x"])
    assert line == "genlab train -cd '/my configs' -cn x 'tags=[a,b c]' seed=1"
    assert shlex.split(line)[2:] == ["-cd", "/my configs", "-cn", "x", "tags=[a,b c]", "seed=1"]


def _job_config(*args: str, env: dict | None = None, cwd: Path | None = None) -> dict:
    result = run_genlab("train", *args, "--cfg", "job", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return yaml.safe_load(result.stdout)


def test_local_default_holds_personal_overrides_below_the_command_line(tmp_path: Path):
    user = tmp_path / "user"
    (user / "local").mkdir(parents=True)
    (user / "local" / "default.yaml").write_text("threads: 1\ntrainer:\n  max_epochs: 7\n")
    env = {"GENLAB_CONFIG_DIR": str(user)}

    plain = _job_config(env={"GENLAB_CONFIG_DIR": str(tmp_path / "none")})
    assert plain["threads"] is None and plain["trainer"]["max_epochs"] != 7
    local = _job_config(env=env)
    assert local["threads"] == 1 and local["trainer"]["max_epochs"] == 7  # over the default recipe's
    assert _job_config("trainer.max_epochs=2", env=env)["trainer"]["max_epochs"] == 2  # the command line wins

    # without a user folder, a --config-dir's local/default.yaml is the one
    extra = tmp_path / "extra"
    (extra / "local").mkdir(parents=True)
    (extra / "local" / "default.yaml").write_text("threads: 2\n")
    none = {"GENLAB_CONFIG_DIR": str(tmp_path / "none")}
    assert _job_config("--config-dir", str(extra), env=none)["threads"] == 2


def test_other_hydra_apps_do_not_get_genlabs_user_folder(tmp_path: Path, monkeypatch):
    """The search-path plugin acts only inside a `genlab` command: Hydra's compose API here is another app."""
    user = tmp_path / "user"
    (user / "local").mkdir(parents=True)
    (user / "local" / "default.yaml").write_text("threads: 5\n")
    monkeypatch.setenv("GENLAB_CONFIG_DIR", str(user))
    for composing, threads in ((False, None), (True, 5)):  # True: as `genlab train` sets it
        monkeypatch.setattr(config, "composing", composing)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            assert compose("train", overrides=["experiment=mnist_vae"]).threads == threads
    GlobalHydra.instance().clear()
