"""A run dir that was moved (or copied) is self-contained: it resumes, records and evaluates its own files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tests.conftest import run_genlab

ARGS = [
    "debug=fast",
    "trainer.max_epochs=2",
    "trainer.max_steps=-1",
    "callbacks.last_checkpoint.every_n_train_steps=2",
    "callbacks.sample_grid=null",
    "test=false",
    "logger=csv",
]


def test_a_moved_run_resumes_and_evaluates_its_own_files(tmp_path: Path):
    first = tmp_path / "first"
    kill = ["+callbacks.kill._target_=tests.kill.KillAtStep", "+callbacks.kill.step=6"]
    env = {"PYTHONPATH": str(Path.cwd())}
    killed = run_genlab("train", *ARGS, *kill, f"hydra.run.dir={first}", env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(first, moved)  # the original folder is gone

    resumed = run_genlab("train", *ARGS, f"hydra.run.dir={moved}", "resume=auto", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((moved / "run.json").read_text())
    assert record["status"] == "completed"
    assert (
        record["best_checkpoint"].startswith("checkpoints/") and (moved / record["best_checkpoint"]).is_file()
    )
    assert record["resumes"][0]["checkpoint"].startswith("checkpoints/")
    # the checkpoint callback continued with the moved folder's files, not the vanished original's
    state = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    paths = [
        v["best_model_path"]
        for k, v in state.items()
        if k.startswith("RunCheckpoint") and v["best_model_path"]
    ]
    assert paths and all(Path(p).parent == moved / "checkpoints" for p in paths), state

    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    shutil.rmtree(moved)
    # (trust_config: the stored config names this test's kill callback)
    evaluated = run_genlab("eval", f"run={copy}", "fidelity.n_samples=0", "trust_config=true")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert list((copy / "checkpoints").glob("*.eval.json")), "the copy's own checkpoint was evaluated"
