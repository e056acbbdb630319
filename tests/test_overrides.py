"""What `genlab train` composes from a command line: the default recipe only for a bare command, and
`group=null` as no option of the group."""

from __future__ import annotations

import pytest
import yaml

from genlab.overrides import DEFAULT_EXPERIMENT, prepare
from tests.conftest import CONF, run_genlab

RECIPE = f"experiment={DEFAULT_EXPERIMENT}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], [RECIPE]),
        (["debug=fast", "optimizer.lr=1e-3"], [RECIPE, "debug=fast", "optimizer.lr=1e-3"]),
        # Hydra's parser takes the overrides as one run of positional arguments: the recipe joins them
        (["-m", "seed=1,2"], ["-m", RECIPE, "seed=1,2"]),
        (["--cfg", "job"], [RECIPE, "--cfg", "job"]),
        (["-p", "model", "--cfg", "job"], [RECIPE, "-p", "model", "--cfg", "job"]),
        (["model=dcgan"], ["model=dcgan"]),
        (["-m", "data=digits,mnist5k"], ["-m", "data=digits,mnist5k"]),
        (["experiment=mnist_gan"], ["experiment=mnist_gan"]),
        (["hparams_search=mnist_vae_optuna"], ["hparams_search=mnist_vae_optuna"]),  # it names its recipe
        (["~experiment"], ["~experiment"]),
        (["model.net.latent_dim=8"], [RECIPE, "model.net.latent_dim=8"]),  # a value, not a choice
        (["--config-name", "stored", "seed=1"], ["--config-name", "stored", "seed=1"]),  # genlab reproduce
        (["callbacks=null"], [RECIPE, "~callbacks"]),
        (["logger=null", "resume=null"], [RECIPE, "~logger", "resume=null"]),  # resume is a value
        (["hydra/launcher=null"], [RECIPE, "~hydra/launcher"]),
    ],
)
def test_prepare(argv: list[str], expected: list[str]):
    assert prepare("train", argv, CONF) == expected


def test_other_configs_get_no_recipe():
    assert prepare("sample", ["seed=1"], CONF) == ["seed=1"]


def composed(*overrides: str) -> dict:
    result = run_genlab("train", *overrides, "--cfg", "job")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return yaml.safe_load(result.stdout)


def test_a_model_alone_trains_with_its_own_config_not_the_default_recipe():
    adam = yaml.safe_load((CONF / "optimizer" / "adam.yaml").read_text())
    cfg = composed("model=dcgan", "debug=fast")
    assert cfg["model"]["_target_"] == "genlab.models.gan.GAN"
    assert cfg["experiment_name"] == "custom" and cfg["tags"] == []
    assert cfg["optimizer"]["lr"] == adam["lr"]  # not the VAE recipe's 2e-3
    assert "_target_" not in (cfg["callbacks"].get("fidelity") or {})

    default = composed("debug=fast")
    assert default["experiment_name"] == "mnist_vae" and default["optimizer"]["lr"] == 2e-3


@pytest.mark.parametrize("group", ["callbacks", "logger", "debug"])
def test_null_chooses_no_option(group: str):
    cfg = composed(f"{group}=null")
    assert not any("_target_" in (entry or {}) for entry in (cfg.get(group) or {}).values())
