"""genlab.runs.loading without training: which checkpoint a run dir names, overrides of the stored config,
the `${runtime.*}` values a model still needs, and `import genlab` staying light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genlab.errors import CheckpointError, ConfigError
from genlab.runs.loading import load_run_config, locate, locate_path, missing_runtime
from tests.conftest import REPO


def make_run(root: Path, best: str | None, files: tuple[str, ...] = ("last.ckpt",)) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    for name in files:
        (root / "checkpoints" / name).write_bytes(b"")
    (root / "run.json").write_text(json.dumps({"status": "completed", "best_checkpoint": best}))
    return root


def test_best_checkpoint_is_found_in_the_run_dir_given(tmp_path: Path):
    files = ("last.ckpt", "epoch001.ckpt")
    relative = make_run(tmp_path / "a", "checkpoints/epoch001.ckpt", files)
    assert locate(run=relative) == (relative, relative / "checkpoints" / "epoch001.ckpt")
    # an absolute path from where the run was trained (which still exists): this dir's own copy is used
    elsewhere = make_run(tmp_path / "b", str(relative / "checkpoints" / "epoch001.ckpt"), files)
    assert locate(run=elsewhere)[1] == elsewhere / "checkpoints" / "epoch001.ckpt"
    # no best checkpoint (a run stopped early): the last one
    plain = make_run(tmp_path / "c", None)
    assert locate_path(plain) == (plain, plain / "checkpoints" / "last.ckpt")
    assert locate_path(plain / "checkpoints" / "last.ckpt") == (plain, plain / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        locate(run=make_run(tmp_path / "d", None, files=()))
    with pytest.raises(CheckpointError, match="does not exist"):
        locate(run=tmp_path / "nowhere")


def test_overrides_must_name_keys_of_the_stored_config(tmp_path: Path):
    (tmp_path / ".hydra").mkdir()
    stored = {
        "paths": {"output_dir": "${hydra:runtime.output_dir}"},
        "data": {"tokenizer_dir": "x"},
        "seed": 1,
    }
    OmegaConf.save(OmegaConf.create(stored), tmp_path / ".hydra" / "config.yaml")
    cfg = load_run_config(tmp_path, ["seed=7", "+extra.key=3"])
    assert cfg.seed == 7 and cfg.extra.key == 3
    assert cfg.paths.output_dir == str(tmp_path) and cfg.data.tokenizer_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="unknown option 'sede'"):
        load_run_config(tmp_path, ["sede=7"])


def test_missing_runtime_names_only_what_the_model_reads_and_nobody_filled():
    cfg = OmegaConf.create(
        {
            "runtime": {"vocab_size": None, "num_classes": None},
            "model": {"net": {"vocab_size": "${runtime.vocab_size}", "n": 3}},
        }
    )
    assert missing_runtime(cfg) == ["vocab_size"]
    cfg.runtime.vocab_size = 65
    assert missing_runtime(cfg) == []


def test_import_genlab_does_not_import_torch():
    check = "import sys, genlab; assert callable(genlab.load); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
