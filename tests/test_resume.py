"""Kill a `genlab train` process, resume it, and compare with a run that was never interrupted: bitwise.

Every family trains for 3 short epochs on CPU with `trainer.deterministic=true`, checkpointing every 4
steps; the interrupted run is SIGKILLed at a random step after its first checkpoint (the step and the
moment within it are printed on failure) and continued with `resume=auto` in its own folder. Weights,
EMA weights, optimiser and scheduler states and the datamodule's sampler state must all be `torch.equal`.
"""

from __future__ import annotations

import json
import random
import re
import shlex
from pathlib import Path

import pytest
import torch

from tests.conftest import run_genlab

CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40

COMMON = [
    "debug=fast",
    "trainer.max_epochs=3",
    "trainer.max_steps=-1",
    "trainer.limit_val_batches=1",
    "trainer.deterministic=true",
    "callbacks.last_checkpoint.every_n_train_steps=4",
    "callbacks.sample_grid=null",
    "test=false",
    "logger=csv",
]
FAMILIES = {
    "vae": ["experiment=mnist_vae", "trainer.limit_train_batches=6"],
    "gan": [  # two optimiser steps a batch: global_step 36 after 18 batches
        "experiment=mnist_gan",
        "trainer.limit_train_batches=6",
        "model.generator.base_channels=8",
        "model.discriminator.base_channels=8",
        "model.discriminator.dropout=0.2",
    ],
    "ddpm": [
        "experiment=mnist_ddpm",
        "trainer.limit_train_batches=6",
        "data.batch_size=8",
        "model.net.base_channels=8",
        "model.ema_decay=0.9",
    ],
    "gpt": [
        "experiment=shakespeare_gpt",
        "data=text_files",
        "data.batches_per_epoch=6",
        "data.block_size=16",
        "data.batch_size=4",
        "model.net.n_layer=1",
        "model.net.n_embd=32",
        "model.net.dropout=0.1",
        "callbacks.text_samples=null",
        "trainer.limit_train_batches=null",  # an epoch is data.batches_per_epoch
    ],
}
STEPS = {"vae": 18, "gan": 36, "ddpm": 18, "gpt": 18}


def overrides(family: str, tmp_path: Path) -> list[str]:
    args = COMMON + FAMILIES[family]
    if family == "gpt":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(CORPUS)
        args.append(f"data.path={corpus}")
    return args


def train(run_dir: Path, *args: str):
    return run_genlab("train", *args, f"hydra.run.dir={run_dir}", env={"PYTHONPATH": str(Path.cwd())})


def final_state(run_dir: Path) -> dict:
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_training_state(a: dict, b: dict, context: str) -> None:
    assert a["global_step"] == b["global_step"], context
    for part in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_equal(a[part], b[part], f"{context}: {part}")
    datamodules = [key for key in a if key.endswith("DataModule")]
    assert datamodules, "the checkpoint holds the datamodule's sampler state"
    for key in datamodules:
        assert_equal(a[key], b[key], f"{context}: {key}")


def assert_equal(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("family", list(FAMILIES))
def test_killed_and_resumed_run_equals_the_uninterrupted_one(family, tmp_path):
    args = overrides(family, tmp_path)
    whole = train(tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-2000:]
    uninterrupted = final_state(tmp_path / "whole")

    # after the first checkpoint (step 4), and before the end
    step, hook = random.randint(5, STEPS[family] - 2), random.choice(["batch_start", "batch_end"])
    context = f"{family}: killed at step {step} ({hook})"
    run_dir = tmp_path / "killed"
    kill = ["+callbacks.kill._target_=tests.kill.KillAtStep", f"+callbacks.kill.step={step}"]
    killed = train(run_dir, *args, *kill, f"+callbacks.kill.hook={hook}")
    assert killed.returncode == -9, f"{context}: {killed.stderr[-2000:]}"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # SIGKILL: no goodbye

    resumed = train(run_dir, *args, "resume=auto")
    assert resumed.returncode == 0, f"{context}: {resumed.stderr[-3000:]}"
    record = json.loads((run_dir / "run.json").read_text())
    (resume,) = record["resumes"]
    assert Path(resume["checkpoint"]).parent == run_dir / "checkpoints" and 4 <= resume["step"] <= step, (
        context
    )
    assert_same_training_state(uninterrupted, final_state(run_dir), context)
    # the resumed run logged the steps after its checkpoint once, not twice, and lost none before it
    assert (run_dir / "csv" / "metrics.csv").read_text() == (
        tmp_path / "whole" / "csv" / "metrics.csv"
    ).read_text()


def test_sigterm_saves_a_checkpoint_and_prints_the_command_that_resumes_bitwise(tmp_path):
    args = [*overrides("vae", tmp_path), "logger=wandb"]  # offline: no credentials here
    whole = train(tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-2000:]

    run_dir = tmp_path / "preempted"
    stop = [
        "+callbacks.kill._target_=tests.kill.KillAtStep",
        "+callbacks.kill.step=7",
        "+callbacks.kill.sig=SIGTERM",
    ]
    preempted = train(run_dir, *args, *stop)
    assert preempted.returncode == 128 + 15, preempted.stderr[-2000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["steps"]) == (
        "interrupted",
        7,
    )  # the step the signal arrived in, finished
    assert record["last_checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert torch.load(record["last_checkpoint"], weights_only=True)["global_step"] == 7

    command = re.search(r"^resume with: (genlab train .*)$", preempted.stderr, re.MULTILINE)
    assert command, preempted.stderr[-2000:]
    argv = shlex.split(command.group(1))[2:]
    assert f"hydra.run.dir={run_dir}" in argv and "resume=auto" in argv
    argv = [arg for arg in argv if not arg.startswith("+callbacks.kill")]  # this test's stopper, not a user's
    resumed = run_genlab("train", *argv, env={"PYTHONPATH": str(Path.cwd())})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training_state(final_state(tmp_path / "whole"), final_state(run_dir), "SIGTERM at step 7")
    # both parts logged to one wandb run: two offline folders (one per process) with the same run id
    parts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(parts) == 2 and len({part.name.rsplit("-", 1)[1] for part in parts}) == 1, parts


def test_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint_to_resume_from(tmp_path):
    args = overrides("vae", tmp_path)
    whole = train(tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-2000:]

    run_dir = tmp_path / "killed"
    # writes half of the step-12 checkpoint, then SIGKILLs the process
    killer = ["+callbacks.kill._target_=tests.kill.KillDuringSave", "+callbacks.kill.step=9"]
    killed = train(run_dir, *args, *killer)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = run_dir / "checkpoints"
    partial = list(checkpoints.glob(".last.ckpt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the save really was cut off half-way
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 8  # the one before

    resumed = train(run_dir, *args, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(checkpoints.glob(".*.tmp")), "the unfinished save is cleaned up when the run resumes"
    assert_same_training_state(final_state(tmp_path / "whole"), final_state(run_dir), "killed during save")

    # resuming the finished run trains no batch: the CSV logger's restart must not cost the history
    metrics = (run_dir / "csv" / "metrics.csv").read_text()
    again = train(run_dir, *args, "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "csv" / "metrics.csv").read_text() == metrics

    # a resume that cannot load (another architecture) leaves the run as it was, with the reason beside it
    wrong = train(run_dir, *args, "resume=auto", "model.net.latent_dim=8")
    assert wrong.returncode == 1 and "comes from another architecture" in wrong.stderr, wrong.stderr[-2000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and "comes from another architecture" in record["resume_error"]
