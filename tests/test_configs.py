"""Every option of every config group composes, and every `_target_` in it instantiates.

The cases are globbed from conf/, so a new yaml is covered without touching this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import CONF

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "debug", "experiment"]
# values a real run learns from its datamodule (DESIGN: runtime values are passed in by the entry point)
RUNTIME = {"vocab_size": 65, "image_shape": [1, 28, 28], "num_classes": 10}
# options that need a companion: mandatory values a user gives on the command line, or a model of
# the matching modality (text data needs a language model and vice versa)
TEXT = ["model=gpt"]
COMPANIONS = {
    ("data", "image_folder"): ["data.root=/nonexistent/images"],
    ("data", "text_files"): ["data.path=/nonexistent/texts", *TEXT],
    ("data", "shakespeare"): TEXT,
    ("data", "tiny_shakespeare"): TEXT,
    ("model", "gpt"): ["data=shakespeare"],
    ("data", "folio_modern"): ["model=seq2seq"],
    ("model", "seq2seq"): ["data=folio_modern"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in options(group)]


def compose_train(overrides: list[str], tmp_path: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.runtime = RUNTIME
    return cfg


def targets(node, path: str = ""):
    """(path, node) of every config node with a `_target_`, outermost first, not descending into them."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
            return
        for key in node:
            yield from targets(node._get_node(key), f"{path}.{key}" if path else str(key))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(group: str, option: str, tmp_path: Path):
    overrides = [f"{group}={option}", *COMPANIONS.get((group, option), [])]
    cfg = compose_train(overrides, tmp_path)
    assert OmegaConf.missing_keys(cfg) == set()
    OmegaConf.resolve(cfg)  # every interpolation resolves

    for path, node in targets(cfg):
        if path == "trainer":
            # GPU options must still build here: same strategy and precision, on the CPU
            node = OmegaConf.merge(node, {"accelerator": "cpu"})
            if "FSDP" in str(node.get("strategy")):  # Lightning refuses FSDP on CPU at Trainer init
                assert instantiate(node.strategy) is not None
                continue
        obj = instantiate(node, _convert_="all")
        assert obj is not None, path


LIGHTNING_DEBUG_FLAGS = ("fast_dev_run", "overfit_batches", "profiler", "detect_anomaly")


def test_trainer_options_are_trainer_arguments_and_debug_flags_need_no_plus(tmp_path: Path):
    import inspect

    import lightning as L

    parameters = inspect.signature(L.Trainer.__init__).parameters
    trainer = OmegaConf.load(CONF / "trainer" / "default.yaml")
    assert set(trainer) - {"_target_"} <= set(parameters)
    for flag in LIGHTNING_DEBUG_FLAGS:  # declared with Lightning's own defaults
        assert trainer[flag] == parameters[flag].default, flag
    cfg = compose_train(
        [
            "trainer.fast_dev_run=2",
            "trainer.overfit_batches=3",
            "trainer.profiler=simple",
            "trainer.detect_anomaly=true",
        ],
        tmp_path,
    )
    assert [cfg.trainer[flag] for flag in LIGHTNING_DEBUG_FLAGS] == [2, 3, "simple", True]
