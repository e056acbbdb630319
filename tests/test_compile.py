"""`compile: true`: the module's nets are compiled in place, their checkpoints load either way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from genlab.build import compile_nets
from genlab.errors import ConfigError
from tests.conftest import CONF, finished_run


def _module(experiment: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "debug=fast"])
    return instantiate(cfg.model, _convert_="all")


@pytest.mark.parametrize(
    ("experiment", "nets"),
    [("mnist_vae", ["net"]), ("mnist_gan", ["generator", "discriminator"]), ("mnist_ddpm", ["net"])],
)
def test_nets_compile_in_place_and_keep_their_state_dict_keys(experiment: str, nets: list[str]):
    eager, compiled = _module(experiment), _module(experiment)
    assert compile_nets(compiled) == nets
    for name in nets:
        assert getattr(compiled, name)._compiled_call_impl is not None  # calls now go through torch.compile
        assert getattr(eager, name)._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` prefix
    compiled.load_state_dict(eager.state_dict())  # strict: checkpoints go both ways
    eager.load_state_dict(compiled.state_dict())


def test_a_module_without_nets_is_refused():
    with pytest.raises(ConfigError, match="compile=true: Linear has no net"):
        compile_nets(torch.nn.Linear(2, 2))


@pytest.mark.slow  # inductor compiles the forward and backward on CPU: tens of seconds, more when cold
def test_training_run_with_compile(tmp_path: Path):
    run_dir = finished_run(
        tmp_path / "run", "debug=fast", "compile=true", "test=false", "~callbacks.sample_grid"
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["steps"] == 4
    state = torch.load(run_dir / record["best_checkpoint"], weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
