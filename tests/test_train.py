"""`genlab train` end to end in a subprocess, as a user runs it: run.json, checkpoint, samples, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_genlab


def read_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_tiny_run_writes_record_checkpoint_and_samples(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_genlab("train", "debug=fast", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]

    record = read_record(run_dir)
    assert record["status"] == "completed"
    assert record["experiment"] == "mnist_vae"
    assert record["seed"] == 42
    assert "debug=fast" in record["overrides"]
    assert record["steps"] == 4
    assert record["versions"]["torch"] and record["versions"]["lightning"]
    for name in ("val/loss", "val/elbo", "test/loss"):
        assert name in record["metrics"], sorted(record["metrics"])
        assert record["metrics"][name] == record["metrics"][name]  # not NaN
    assert (
        record["best_checkpoint"].startswith("checkpoints/")
        and (run_dir / record["best_checkpoint"]).is_file()
    )
    # the VAE declares its ELBO best when largest; undeclared losses are best when smallest (genlab compare)
    assert record["metric_modes"]["val/elbo"] == "max" and record["metric_modes"]["val/loss"] == "min"
    assert set(record["metric_modes"]) == set(record["metrics"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    png = run_dir / "samples" / "last.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_error_is_one_line_and_marks_run_failed(tmp_path: Path):
    run_dir = tmp_path / "run"
    missing = tmp_path / "no_such_folder"
    result = run_genlab(
        "train", "debug=fast", "data=image_folder", f"data.root={missing}", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(missing) in error_lines[0], result.stderr[-2000:]
    record = read_record(run_dir)
    assert record["status"] == "failed"
    assert str(missing) in record["error"]


def test_missing_mandatory_value_fails_before_training(tmp_path: Path):
    result = run_genlab("train", "debug=fast", "data=image_folder", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "data.root" in result.stderr and "Traceback" not in result.stderr


def test_existing_run_dir_is_refused_and_left_untouched(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"status": "completed"}')
    result = run_genlab("train", "debug=fast", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert "already holds a run" in result.stderr
    assert (run_dir / "run.json").read_text() == '{"status": "completed"}'
    assert not (run_dir / ".hydra").exists()


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path, monkeypatch):
    """The time-stamped run dir is claimed when Hydra resolves it: a second run of the same experiment in the
    same second gets `<name>-2`, never the first run's folder (whose config and log it would overwrite)."""
    from datetime import datetime, timedelta

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from genlab.config import conf_dir, fresh_dir

    monkeypatch.chdir(tmp_path)
    now = datetime.now()
    taken = [  # every name the run could get in the next seconds is already another run's
        Path(f"outputs/train/runs/{now + timedelta(seconds=s):%Y-%m-%d_%H-%M-%S}_mnist_vae") for s in range(5)
    ]
    for folder in taken:
        folder.mkdir(parents=True)
        (folder / "run.json").write_text("theirs")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", ["experiment=mnist_vae"], return_hydra_config=True)
        run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
    assert run_dir.is_dir() and run_dir.name.endswith("_mnist_vae-2")
    assert run_dir.with_name(run_dir.name[: -len("-2")]) in taken
    assert [(f / "run.json").read_text() for f in taken] == ["theirs"] * 5
    assert sorted(p.name for p in run_dir.iterdir()) == []
    # and a third in that second gets -3
    assert fresh_dir(str(run_dir.with_name(run_dir.name[:-2]))).endswith("-3")


def test_sweeps_started_in_the_same_second_get_folders_of_their_own_and_keep_them(
    tmp_path: Path, monkeypatch
):
    """A sweep claims `<time>-2` when `<time>` is another sweep's; each job's config, which Hydra recomposes and
    hands the master config's resolver cache (as for `${now:}`), resolves the same folder instead of claiming a
    new one. (Checked end to end: three sweeps, two Optuna and one joblib, started in two seconds.)"""
    from datetime import datetime, timedelta

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from genlab.config import conf_dir

    monkeypatch.chdir(tmp_path)
    now = datetime.now()
    taken = [Path(f"outputs/train/multirun/{now + timedelta(seconds=s):%Y-%m-%d_%H-%M-%S}") for s in range(5)]
    for folder in taken:
        (folder / "0").mkdir(parents=True)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        master = compose("train", ["experiment=mnist_vae"], return_hydra_config=True)
        sweep_dir = Path(OmegaConf.select(master, "hydra.sweep.dir"))
        job = compose("train", ["experiment=mnist_vae", "seed=2"], return_hydra_config=True)
        OmegaConf.copy_cache(from_config=master, to_config=job)
        assert Path(OmegaConf.select(job, "hydra.sweep.dir")) == sweep_dir
    assert sweep_dir.name.endswith("-2") and sweep_dir.with_name(sweep_dir.name[:-2]) in taken
    assert Path(OmegaConf.select(master, "hydra.sweep.dir")) == sweep_dir  # resolved again: still the same
    assert sorted(p.name for p in sweep_dir.parent.iterdir() if p.name.endswith(("-2", "-3"))) == [
        sweep_dir.name
    ]


def test_ctrl_c_marks_run_interrupted(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "genlab.cli", "train", "debug=fast", "trainer.max_steps=100000",
         "trainer.max_epochs=1000", f"hydra.run.dir={run_dir}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert read_record(run_dir)["status"] == "interrupted", stderr[-2000:]


def test_multirun_makes_one_run_dir_per_job(tmp_path: Path):
    sweep = tmp_path / "sweep"
    result = run_genlab(
        "train", "-m", "debug=fast", "trainer.max_steps=2", "seed=1,2", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = sorted(sweep.glob("*/run.json"))
    assert len(records) == 2
    seeds = sorted(json.loads(r.read_text())["seed"] for r in records)
    assert seeds == [1, 2]


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]])
def test_help_answers_without_importing_torch(args):
    code = (
        "import sys, runpy; sys.argv = ['genlab', *sys.argv[1:]];"
        "from genlab.cli import main\ntry: main()\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('NO_TORCH')"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True)
    assert "NO_TORCH" in result.stdout, result.stderr
    if args[0] == "train":
        assert "model: " in result.stdout and "optimizer: adam, adamw, sgd" in result.stdout


def test_every_debug_preset_runs(tmp_path: Path):
    """`debug=fast|fdr|limit|overfit|profiler` (every file of conf/debug/), each a short CPU run of the
    default recipe; one multirun, so torch and Lightning are imported once."""
    presets = sorted(p.stem for p in (REPO / "conf" / "debug").glob("*.yaml"))
    sweep = tmp_path / "sweep"
    result = run_genlab("train", "-m", f"debug={','.join(presets)}", f"hydra.sweep.dir={sweep}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for path in sweep.glob("*/run.json"):
        record = json.loads(path.read_text())
        (preset,) = [o.removeprefix("debug=") for o in record["overrides"] if o.startswith("debug=")]
        assert record["status"] == "completed", (preset, record.get("error"))
        runs[preset] = (path.parent, record)
    assert sorted(runs) == presets
    assert runs["fdr"][1]["steps"] == 1  # fast_dev_run: one batch
    assert runs["limit"][1]["steps"] == 3 * 4  # three epochs of four batches
    losses = [float(row["train/loss"]) for row in _csv_rows(runs["overfit"][0]) if row.get("train/loss")]
    assert len(losses) == 100 and losses[-1] < 0.5 * losses[0], losses  # one batch, learnt
    assert "Profiler Report" in (runs["profiler"][0] / "train.log").read_text()
    # Lightning's litlogger advert, a torch deprecation inside Lightning, a FLOPs column of zeros
    for noise in ("litlogger", "LeafSpec", "FLOPs"):
        assert noise not in result.stdout + result.stderr, noise


def test_callbacks_none_and_early_stopping(tmp_path: Path):
    sweep = tmp_path / "sweep"
    result = run_genlab(
        "train", "-m", "debug=limit", "callbacks=none,early_stopping",
        # a threshold every val/loss meets: early stopping ends the run after its first epoch
        # (`++`: callbacks=none has no early_stopping entry; there the key is ignored, having no _target_)
        "++callbacks.early_stopping.stopping_threshold=1e9", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    none, early = (read_record(sweep / job) for job in ("0", "1"))
    assert none["status"] == early["status"] == "completed"
    assert none["steps"] == 3 * 4 and not (sweep / "0" / "samples").exists()  # no sample grid
    assert early["steps"] == 4  # stopped after the first epoch


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_shorter_than_an_epoch_validates_at_its_last_step(tmp_path: Path):
    """`trainer.max_steps=3` ends long before the first epoch (250 batches): it validates once, at the end."""
    run_dir = tmp_path / "run"
    short = ["debug=fast", "trainer.limit_train_batches=null", "trainer.max_steps=3", "logger=csv"]
    result = run_genlab("train", *short, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_record(run_dir)
    assert record["steps"] == 3 and "val/loss" in record["metrics"] and "objective_missing" not in record
    assert record["best_checkpoint"] == "checkpoints/epoch000-step000003.ckpt"
    assert len([row for row in _csv_rows(run_dir) if row.get("val/loss")]) == 1


def test_a_run_whose_objective_is_missing_says_so_in_its_record(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_genlab("train", "debug=fast", "objective.metric=val/nope", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "completed"
    assert record["objective_missing"].startswith("objective metric 'val/nope' was not logged; logged: [")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # a sweep would maximise the loss-like direction of a metric the family declares best when largest
        (
            ["objective.metric=val/elbo", "objective.mode=min"],
            "objective.mode=min but val/elbo is best when largest: set objective.mode=max",
        ),
        # a callback entry with no _target_ that no shipped config knows: a typo, not a silent no-op
        (
            ["+callbacks.fidelty.n_samples=0"],
            "callbacks.fidelty has no _target_ and no shipped config defines it: a typo?",
        ),
    ],
)
def test_contradictory_or_misspelt_settings_fail_in_one_line(tmp_path: Path, overrides, expected):
    result = run_genlab("train", "debug=fast", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
