"""Stop a `genlab train` process, resume it, and compare with a run that was never interrupted: bitwise.

Every family trains for 3 short epochs on CPU with `trainer.deterministic=true`, checkpointing every 4
steps; the interrupted run is stopped (SIGKILL at a step drawn from a fixed seed, right after the epoch-end
checkpoint, right after a save, or by a signal) and continued with `resume=auto` in its own folder.
Weights, EMA weights, optimiser and scheduler states and the datamodule's sampler state must all be
`torch.equal`, and csv/metrics.csv must hold every row once: byte-equal to the uninterrupted run's.
Each family's uninterrupted run is trained once per test process and shared.
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
    "seq2seq": [  # tiny synthetic editions (tests/parallel_corpus.py), written by overrides()
        "experiment=folio_modern_seq2seq",
        "data.val_plays=[beta]",
        "data.test_plays=[gamma]",
        "data.block_size=64",
        "data.batch_size=2",
        "model.net.n_embd=16",
        "model.net.n_encoder_layer=1",
        "model.net.n_decoder_layer=1",
        "trainer.val_check_interval=null",
        "trainer.limit_train_batches=6",
        "callbacks.translations.num_samples=1",
    ],
}
STEPS = {"vae": 18, "gan": 36, "ddpm": 18, "gpt": 18, "seq2seq": 18}


def overrides(family: str, tmp_path: Path) -> list[str]:
    args = COMMON + FAMILIES[family]
    if family == "gpt":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(CORPUS)
        args.append(f"data.path={corpus}")
    if family == "seq2seq":
        from tests.parallel_corpus import write_editions

        texts = write_editions(tmp_path / "editions", plays=("alpha", "beta", "gamma"))
        args.append(f"data.texts_dir={texts}")
    return args


_WHOLE: dict[str, Path] = {}


def whole_run(family: str, tmp_path_factory) -> Path:
    """The uninterrupted run of `family`, trained once per test process."""
    if family not in _WHOLE:
        folder = tmp_path_factory.mktemp(f"whole-{family}")
        result = train(folder / "run", *overrides(family, folder))
        assert result.returncode == 0, result.stderr[-2000:]
        _WHOLE[family] = folder / "run"
    return _WHOLE[family]


def stopped_then_resumed(family: str, tmp_path: Path, whole: Path, stop: list[str], context: str, code: int):
    """Stop a run of `family` with the `stop` overrides, resume it in its folder, and check it against `whole`."""
    args = overrides(family, whole.parent)  # the same corpus file as the whole run
    run_dir = tmp_path / "stopped"
    stopped = train(run_dir, *args, *stop)
    assert stopped.returncode == code, f"{context}: {stopped.stderr[-2000:]}"
    resumed = train(run_dir, *args, "resume=auto")
    assert resumed.returncode == 0, f"{context}: {resumed.stderr[-3000:]}"
    assert_same_training_state(final_state(whole), final_state(run_dir), context)
    # the resumed run logged the steps after its checkpoint once, not twice, and lost none before it
    assert (run_dir / "csv" / "metrics.csv").read_text() == (whole / "csv" / "metrics.csv").read_text(), (
        context
    )
    return run_dir


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
def test_killed_and_resumed_run_equals_the_uninterrupted_one(family, tmp_path, tmp_path_factory):
    whole = whole_run(family, tmp_path_factory)
    # after the first checkpoint (step 4), and before the end; drawn from a fixed seed so a failure reproduces
    rng = random.Random(f"kill-{family}")
    step, hook = rng.randint(5, STEPS[family] - 2), rng.choice(["batch_start", "batch_end"])
    kill = ["+callbacks.kill._target_=tests.kill.KillAtStep", f"+callbacks.kill.step={step}"]
    run_dir = stopped_then_resumed(
        family,
        tmp_path,
        whole,
        [*kill, f"+callbacks.kill.hook={hook}"],
        f"{family}: killed at step {step} ({hook})",
        -9,
    )
    record = json.loads((run_dir / "run.json").read_text())
    (resume,) = record["resumes"]
    assert resume["checkpoint"].startswith("checkpoints/") and 4 <= resume["step"] <= step, resume


# the first step of the second epoch: the epoch-end checkpoint (written after validation) is newer than
# last.ckpt (step 4), so resume=auto continues from it, as a killed default run does
SECOND_EPOCH = {"vae": 6, "gan": 12, "ddpm": 6, "gpt": 6, "seq2seq": 6}


# every family has the same cause and fix (genlab/callbacks/resume.py: ResumePosition); the default suite runs
# one image family and the LM, `-m slow` the other two
@pytest.mark.parametrize(
    "family",
    ["vae", "gpt", *(pytest.param(f, marks=pytest.mark.slow) for f in ("gan", "ddpm", "seq2seq"))],
)
def test_a_run_resumed_from_its_epoch_end_checkpoint_equals_the_uninterrupted_one(
    family, tmp_path, tmp_path_factory
):
    whole = whole_run(family, tmp_path_factory)
    step = SECOND_EPOCH[family]
    kill = [
        "+callbacks.kill._target_=tests.kill.KillAtStep",
        f"+callbacks.kill.step={step}",
        "+callbacks.kill.hook=batch_start",
    ]
    run_dir = stopped_then_resumed(
        family, tmp_path, whole, kill, f"{family}: killed after the epoch-end checkpoint", -9
    )
    (resume,) = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert resume["checkpoint"] == f"checkpoints/epoch000-step{step:06d}.ckpt", resume


@pytest.mark.parametrize(
    "family, stop, code",
    [
        (
            "vae",
            [
                "+callbacks.kill._target_=tests.kill.KillAtStep",
                "+callbacks.kill.step=7",
                "+callbacks.kill.sig=SIGINT",
            ],
            130,
        ),
        (
            "gan",
            [
                "+callbacks.kill._target_=tests.kill.KillAtStep",
                "+callbacks.kill.step=7",
                "+callbacks.kill.sig=SIGTERM",
            ],
            143,
        ),
        ("vae", ["+callbacks.kill._target_=tests.kill.KillAfterSave", "+callbacks.kill.step=8"], -9),
    ],
    ids=["vae-SIGINT", "gan-SIGTERM", "vae-SIGKILL-right-after-a-save"],
)
def test_a_stop_right_after_a_checkpoint_loses_no_metrics_row(family, stop, code, tmp_path, tmp_path_factory):
    """The checkpoint of a step is written before Lightning logs that step's row: the row travels with it."""
    stopped_then_resumed(
        family, tmp_path, whole_run(family, tmp_path_factory), stop, f"{family}: {stop}", code
    )


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
    assert record["last_checkpoint"] == "checkpoints/last.ckpt"  # relative: run dirs move
    assert torch.load(run_dir / record["last_checkpoint"], weights_only=True)["global_step"] == 7

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


def files_of(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run dir with its bytes, but for the folders each resume attempt adds to .hydra/."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not p.relative_to(run_dir).parts[:2][-1].startswith("resume-")
    }


def test_kill_during_a_save_then_failed_resumes_then_a_completed_run_resumed(tmp_path, tmp_path_factory):
    whole = whole_run("vae", tmp_path_factory)
    args = overrides("vae", whole.parent)
    run_dir = tmp_path / "killed"
    # writes half of the step-12 checkpoint, then SIGKILLs the process
    killer = ["+callbacks.kill._target_=tests.kill.KillDuringSave", "+callbacks.kill.step=9"]
    killed = train(run_dir, *args, *killer)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = run_dir / "checkpoints"
    partial = list(checkpoints.glob(".last.ckpt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the save really was cut off half-way
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 8  # the one before
    partial[0].unlink()  # (resuming removes it; here it would only stand in the way of comparing bytes)

    # resumes that fail before training goes on leave every file of the run as it was, byte for byte
    before = files_of(run_dir)
    for bad, says in [
        (["model.net.latent_dim=8"], "comes from another architecture"),
        (["optimizer.lr=abc"], "optimizer.lr=abc"),
        (["optimizer.lr=1e-4"], "init_from="),  # resume continues exactly: a new lr is a new start
    ]:
        failed = train(run_dir, *args, *bad, "resume=auto")
        assert failed.returncode == 1 and says in failed.stderr, (bad, failed.stderr[-2000:])
        assert len([line for line in failed.stderr.splitlines() if line.startswith("error:")]) == 1
        assert files_of(run_dir) == before, bad
    attempts = sorted((run_dir / ".hydra").glob("resume-*"))
    assert len(attempts) == 3 and all(
        (a / "config.yaml").is_file() and (a / "error.txt").is_file() for a in attempts
    )

    resumed = train(run_dir, *args, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training_state(final_state(whole), final_state(run_dir), "killed during save")
    assert (run_dir / "csv" / "metrics.csv").read_text() == (whole / "csv" / "metrics.csv").read_text()

    # resuming the completed run says so in one line and changes nothing
    finished = files_of(run_dir)
    again = train(run_dir, *args, "resume=auto")
    assert again.returncode == 0 and "already complete" in again.stdout + again.stderr, again.stderr[-2000:]
    assert files_of(run_dir) == finished

    # ...unless more training is asked for: then it trains on, in the same folder
    longer = train(
        run_dir,
        *[a for a in args if not a.startswith("trainer.max_epochs")],
        "trainer.max_epochs=4",
        "resume=auto",
    )
    assert longer.returncode == 0, longer.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["steps"], len(record["resumes"])) == ("completed", 24, 2)
    assert record["resumes"][-1]["config"].startswith(".hydra/resume-")


def test_ctrl_c_twice_stops_at_once_with_the_shells_status_for_sigint(tmp_path):
    stop = ["+callbacks.kill._target_=tests.kill.KillAtStep", "+callbacks.kill.step=5"]
    stopped = train(
        tmp_path / "run",
        *overrides("vae", tmp_path),
        *stop,
        "+callbacks.kill.sig=SIGINT",
        "+callbacks.kill.repeat=2",
    )
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


def test_a_run_cut_short_by_max_steps_trains_on_with_a_larger_budget(tmp_path):
    """Stopped by trainer.max_steps mid-epoch, then resumed with a larger max_steps: the rest of the epoch is
    trained (Lightning would count the epoch as done and, at max_epochs, train nothing). With a constant
    learning rate (a schedule depends on the budget) the weights equal those of a run given that budget."""
    common = ["debug=fast", "threads=1", "trainer.deterministic=true", "scheduler=none"]
    short = run_genlab("train", *common, "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert short.returncode == 0, short.stderr[-3000:]
    longer = run_genlab(
        "train", *common, "trainer.max_steps=4", "resume=auto", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert longer.returncode == 0, longer.stderr[-3000:]
    whole = run_genlab("train", *common, "trainer.max_steps=4", f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["steps"] == 4
    resumed, reference = (
        torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        for name in ("run", "whole")
    )
    assert resumed["global_step"] == reference["global_step"] == 4
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
