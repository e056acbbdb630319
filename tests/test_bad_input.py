"""Every bad input a user can give: one clear `error:` line (or Hydra's own message for a config it cannot
compose), a non-zero exit, no traceback, and no earlier run touched. Add a case with one line in CASES.

The CLI runs in this process (`genlab.cli.main`): a subprocess per case would pay 10-20 s of imports each.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import __main__
from genlab.cli import main as genlab

HYDRA = "hydra"  # a composition error, printed by Hydra itself (several lines)
ONE_LINE = "one line"  # a genlab error: exactly one `error: ...` line

# (id, command and args ({tmp} is the test's folder), who answers, a fragment of the expected message)
# `train` cases get `debug=fast` and a fresh `hydra.run.dir` unless they set one.
CASES = [
    ("unknown-option", ["train", "model=nope"], HYDRA, "Could not find 'model/nope'"),
    ("no-model", ["train", "model=null"], ONE_LINE, "model: Key 'model' is not in struct"),
    ("misspelt-key", ["train", "optimizer.lrr=1"], HYDRA, "Could not override 'optimizer.lrr'"),
    ("wrong-type", ["train", "optimizer.lr=abc"], ONE_LINE, "optimizer.lr=abc: rejected by torch.optim.Adam"),
    (
        "wrong-type-in-model",
        ["train", "model.net.latent_dim=abc"],
        ONE_LINE,
        "model.net.latent_dim='abc': must be a positive integer",
    ),
    (
        "negative-size",
        ["train", "model.net.latent_dim=-1"],
        ONE_LINE,
        "model.net.latent_dim=-1: must be a positive",
    ),
    (
        "run-dir-in-proc",  # root may "write" there, says os.access; creating the folder says no
        ["train", "hydra.run.dir=/proc/genlab-run"],
        ONE_LINE,
        "hydra.run.dir=/proc/genlab-run cannot be created",
    ),
    (
        "sweep-dir-in-sys",
        ["train", "-m", "seed=1,2", "hydra.sweep.dir=/sys/genlab-sweep"],
        ONE_LINE,
        "hydra.sweep.dir=/sys/genlab-sweep cannot be created",
    ),
    (
        "init-from-missing",
        ["train", "init_from={tmp}/nope"],
        ONE_LINE,
        "/nope: no such file or folder; give a .ckpt file or a run folder",
    ),
    (
        "init-from-another-family",
        ["train", "init_from={tmp}/gpt.ckpt"],
        ONE_LINE,
        "gpt.ckpt does not fit VAE: missing net.",
    ),
    (
        "missing-mandatory",
        ["train", "model=gpt", "data=text_files"],
        ONE_LINE,
        "missing mandatory value: data.path; set it on the command line",
    ),
    ("missing-data-path", ["train", "data=image_folder", "data.root={tmp}/nope"], ONE_LINE, "does not exist"),
    (
        "empty-data-path",
        ["train", "data=image_folder", "data.root={tmp}/empty"],
        ONE_LINE,
        "holds no PNG/JPEG",
    ),
    (
        "truncated-image",
        ["train", "data=image_folder", "data.root={tmp}/truncated", "data.image_shape=[3,8,8]"],
        ONE_LINE,
        "image file is truncated",
    ),
    (
        "undecodable-text",
        ["train", "model=gpt", "data=text_files", "data.path={tmp}/latin1", "data.tokenizer=char"],
        ONE_LINE,
        "is not UTF-8 text",
    ),
    (
        "empty-text",
        ["train", "model=gpt", "data=text_files", "data.path={tmp}/blank", "data.tokenizer=char"],
        ONE_LINE,
        "is empty",
    ),
    (
        "model-needs-missing-key",  # a text datamodule under an image model: no data.image_shape
        ["train", "data=text_files", "data.path={tmp}/latin1"],
        ONE_LINE,
        "model.net.image_shape: Interpolation key 'data.image_shape' not found",
    ),
    (
        "image-size",
        ["train", "data.image_shape=[1,30,30]"],
        ONE_LINE,
        "needs H and W divisible by 4, got 30x30",
    ),
    (
        "too-many-devices",
        ["train", "trainer.devices=4096"],
        ONE_LINE,
        "trainer.devices=4096 but this machine",
    ),
    (
        "unwritable-output-dir",
        ["train", "hydra.run.dir={tmp}/a_file/run"],
        ONE_LINE,
        "a_file is not a folder; choose another hydra.run.dir",
    ),
    ("non-finite-loss", ["train", "optimizer.lr=1e12"], ONE_LINE, "non-finite loss at step 1"),
    (
        "gan-diverges",
        ["train", "experiment=mnist_gan", "optimizer.lr=1e30"],
        ONE_LINE,
        "(train/g_loss is nan: the GAN",
    ),
    (
        "compare-empty-folder",
        ["compare", "{tmp}/empty"],
        ONE_LINE,
        "no run directories (folders with run.json)",
    ),
    ("compare-corrupt-record", ["compare", "{tmp}/corrupt"], ONE_LINE, "no readable run.json"),
    ("reproduce-failed-run", ["reproduce", "{tmp}/failed"], ONE_LINE, "is a failed run"),
    (
        "reproduce-untrusted-config",
        ["reproduce", "{tmp}/foreign"],
        ONE_LINE,
        "model._target_=os.system is not a genlab/torch/lightning class: pass --trust-config only if",
    ),
    (
        "resume-without-checkpoint",
        ["train", "resume=auto"],
        ONE_LINE,
        "resume=auto: no complete checkpoint in",
    ),
    ("resume-missing-file", ["train", "resume={tmp}/nope.ckpt"], ONE_LINE, "no such file; give a .ckpt file"),
    (
        "resume-truncated-checkpoint",
        ["train", "resume={tmp}/truncated.ckpt"],
        ONE_LINE,
        "is truncated or not a torch checkpoint",
    ),
    (
        "resume-checkpoint-of-another-family",
        ["train", "resume={tmp}/gpt.ckpt"],
        ONE_LINE,
        "gpt.ckpt: the checkpoint's weights do not fit VAE (missing net.decoder",
    ),
    ("sample-missing-run", ["sample", "run={tmp}/nope"], ONE_LINE, "nope does not exist: pass run= a genlab"),
    ("sample-run-without-checkpoint", ["sample", "run={tmp}/foreign"], ONE_LINE, "foreign has no checkpoint"),
    (
        "sample-unknown-option",
        ["sample", "run={tmp}/outputs/earlier", "nmae=3"],
        ONE_LINE,
        "unknown option 'nmae': it is neither an option of this command nor a key of the run's config",
    ),
    (
        "resume-checkpoint-needing-unpickling",
        ["train", "resume={tmp}/pickled.ckpt"],
        ONE_LINE,
        "holds an object of class argparse.Namespace, beyond tensors and plain values; pass trust_checkpoint=true",
    ),
    (
        "eval-checkpoint-needing-unpickling",  # one line, no torch advice or terminal colours
        ["eval", "ckpt={tmp}/evalrun/checkpoints/pickled.ckpt"],
        ONE_LINE,
        "pickled.ckpt holds an object of class argparse.Namespace, beyond tensors and plain values; pass trust",
    ),
]


def make_inputs(tmp: Path) -> None:
    """The bad files and folders the cases point at."""
    (tmp / "empty").mkdir()
    (tmp / "truncated").mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):  # enough for non-empty val/test splits
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp / "truncated" / f"{i}.png")
    png = (tmp / "truncated" / "0.png").read_bytes()
    (tmp / "truncated" / "0.png").write_bytes(png[: len(png) // 2])
    (tmp / "latin1").mkdir()
    (tmp / "latin1" / "book.txt").write_bytes("café crème brûlée\n".encode("latin-1") * 50)
    (tmp / "blank").mkdir()
    (tmp / "blank" / "book.txt").write_bytes(b"")
    (tmp / "a_file").write_text("not a folder")
    (tmp / "corrupt" / "run0").mkdir(parents=True)
    (tmp / "corrupt" / "run0" / "run.json").write_text('{"status": "compl')
    gpt = {"state_dict": {"net.wte.weight": torch.zeros(4, 2)}, "pytorch-lightning_version": "2.6.6"}
    gpt.update(epoch=0, global_step=0)
    torch.save(gpt, tmp / "gpt.ckpt")
    (tmp / "truncated.ckpt").write_bytes((tmp / "gpt.ckpt").read_bytes()[:200])
    torch.save({**gpt, "hyper_parameters": argparse.Namespace(lr=1.0)}, tmp / "pickled.ckpt")
    (tmp / "evalrun" / "checkpoints").mkdir(parents=True)
    (tmp / "evalrun" / ".hydra").mkdir()
    (tmp / "evalrun" / ".hydra" / "config.yaml").write_text(
        "seed: 42\npaths: {output_dir: x}\ndata: {}\ntrainer: {}\n"
    )
    (tmp / "evalrun" / "checkpoints" / "pickled.ckpt").write_bytes((tmp / "pickled.ckpt").read_bytes())
    (tmp / "foreign" / ".hydra").mkdir(parents=True)
    (tmp / "foreign" / "run.json").write_text(
        json.dumps({"status": "completed", "metrics": {"val/loss": 1.0}})
    )
    (tmp / "foreign" / ".hydra" / "config.yaml").write_text(
        "model:\n  _target_: os.system\n  command: touch pwned\n"
    )
    (tmp / "failed").mkdir()
    record = {"status": "failed", "error": "NonFiniteLossError: non-finite loss at step 3", "metrics": {}}
    (tmp / "failed" / "run.json").write_text(json.dumps(record))


def make_earlier_run(run_dir: Path) -> dict[Path, bytes]:
    """A finished run that no bad input may touch; returns its files' contents."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    record = {"status": "completed", "seed": 42, "metrics": {"val/loss": 0.5}, "overrides": []}
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    return snapshot(run_dir)


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def cli_in_process(monkeypatch):
    """Run `genlab` here, and put back what Hydra and the CLI change in the process (argv, __main__, logging)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(__main__, "__spec__", getattr(__main__, "__spec__", None), raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(argv: list[str]) -> int:
        try:
            genlab(argv)
        except SystemExit as exit_:
            return 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
        return 0

    yield run
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("args", "who", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly(tmp_path: Path, capsys, cli_in_process, args, who, expected):
    make_inputs(tmp_path)
    earlier = tmp_path / "outputs" / "earlier"
    before = make_earlier_run(earlier)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    new_run = tmp_path / "outputs" / "new"
    if args[0] == "train":
        args = [args[0], "debug=fast", *args[1:]]
        if not any(arg.startswith("hydra.run.dir=") for arg in args):
            args.append(f"hydra.run.dir={new_run}")

    code = cli_in_process(args)
    stderr = capsys.readouterr().err

    assert code != 0, stderr
    assert "Traceback" not in stderr and "\x1b[" not in stderr  # no traceback, no terminal colour codes
    if who == ONE_LINE:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], stderr
    else:
        assert expected in stderr
    assert snapshot(earlier) == before
    if (new_run / "run.json").exists():  # the run started: its record says why it failed
        record = json.loads((new_run / "run.json").read_text())
        assert record["status"] == "failed" and expected in record["error"], record


def test_hydra_full_error_shows_the_traceback(tmp_path: Path, monkeypatch, cli_in_process):
    from hydra.errors import InstantiationException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    args = ["train", "debug=fast", "data.image_shape=[1,30,30]", f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(InstantiationException) as raised:  # Hydra prints it with its traceback
        genlab(args)
    assert "divisible by 4" in str(raised.value.__cause__)


def test_help_into_a_closed_pipe_ends_quietly():
    """`genlab eval --help | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    import subprocess

    shell = f"{sys.executable} -m genlab.cli eval --help | true; echo $" + "{PIPESTATUS[0]}"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.stdout.strip() == "141"  # the status of a writer whose reader left (128 + SIGPIPE)
