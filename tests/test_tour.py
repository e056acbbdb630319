"""The README's tour, in debug form, from a wheel installed into a fresh venv and run from an unrelated folder.

The venv holds genlab from the built wheel only; its dependencies are those of the test environment (reached
through a path file, so no editable install of the checkout is visible). Every command of the tour runs as
the README writes it, plus `debug=fast`-style budgets: a command that works only from a checkout fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """(run, cwd): `run(*args)` runs the wheel's `genlab` in `cwd`, an empty folder outside the checkout."""
    root = tmp_path_factory.mktemp("tour")
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(root / "wheels"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (root / "wheels").glob("genlab-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # the test environment's packages, as a plain path: its .pth files (genlab's editable finder) stay unread
    Path(site, "test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True)
    cwd = root / "work"
    cwd.mkdir()
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        "GENLAB_CACHE_DIR": str(root / "cache"),
        "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}",
    }
    env.pop("PYTHONPATH", None)

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if ok:
            assert result.returncode == 0, f"{' '.join(args)}\n{result.stderr[-3000:]}"
        return result

    where = run("python", "-c", "import genlab, genlab.config as c; print(genlab.__file__, c.conf_dir())")
    assert str(env_dir) in where.stdout and str(REPO) not in where.stdout, where.stdout
    return run, cwd


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_the_readme_tour_works_from_a_plain_install(tour):
    run, cwd = tour
    fast = ["debug=fast", "threads=1"]
    vae, gan, ddpm, gpt = (cwd / "runs" / name for name in ("vae", "gan", "ddpm", "gpt"))

    run("genlab", "train", *fast, f"hydra.run.dir={vae}")
    assert record(vae)["experiment"] == "mnist_vae" and record(vae)["status"] == "completed"
    run("genlab", "train", "model.net.latent_dim=32", "optimizer=adamw", *fast)
    run("genlab", "train", "model=dcgan", *fast, f"hydra.run.dir={gan}")
    assert "vae" not in record(gan)["experiment"]  # a model alone applies no other family's recipe
    run("genlab", "train", "-m", "seed=1,2", *fast, "hydra.sweep.dir=multirun/seeds")
    assert "experiment" in run("genlab", "train", "--help").stdout
    assert "optimizer:" in run("genlab", "train", "--cfg", "job").stdout
    run("genlab", "train", "debug=fdr", "threads=1")
    run("genlab", "train", "callbacks=early_stopping", "callbacks.early_stopping.patience=5", *fast)
    run("genlab", "train", "experiment=mnist_ddpm", *fast, f"hydra.run.dir={ddpm}")
    run("genlab", "train", "experiment=shakespeare_gpt", *fast, f"hydra.run.dir={gpt}")

    table = run("genlab", "compare", "multirun/seeds", "--by", "seed", "--format", "md").stdout
    assert "seed" in table
    run("genlab", "compare", "runs", "--metric", "val/elbo", "--format", "html")
    assert list(cwd.rglob("*.html"))
    run("genlab", "reproduce", str(vae))
    run(
        "genlab", "train", "-m", "hparams_search=mnist_vae_optuna", "hydra/launcher=joblib",
        "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2", *fast, "hydra.sweep.dir=multirun/optuna",
    )  # fmt: skip
    assert (cwd / "multirun" / "optuna" / "optuna.db").is_file()

    run("genlab", "eval", f"run={vae}")
    run("genlab", "sample", f"run={vae}", "n=4")
    run("genlab", "sample", f"run={ddpm}", "sampler=ddpm", "steps=5", "n=2")
    run("genlab", "sample", f"run={vae}", "mode=interpolate")
    text = run("genlab", "sample", f"run={gpt}", "prompt=ROMEO.", "top_k=50", "max_new_tokens=20").stdout
    assert text.startswith("ROMEO.")
    again = run("genlab", "train", *fast, f"hydra.run.dir={vae}", "resume=auto")
    assert "already complete" in again.stdout + again.stderr
    loaded = run(
        "python", "-c",
        f"import genlab, torch; m = genlab.load('{vae}', device='cpu'); "
        "x = m.sample(2, generator=torch.Generator().manual_seed(0)); print(tuple(x.shape), float(x.min()) >= 0)",
    ).stdout  # fmt: skip
    assert loaded.strip() == "(2, 1, 28, 28) True"
