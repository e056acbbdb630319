"""Wall time of `genlab compare` on 100 synthetic run directories: table only, with plots, and html.

    python benchmarks/compare_runs.py [--runs 100] [--repeat 3]

Each run dir looks like one `genlab train` writes: run.json, .hydra/config.yaml (a full composed config with
its interpolations), csv/metrics.csv (~50 sparse rows as Lightning's CSVLogger writes them). Times are for a
fresh `genlab compare` process, interpreter start included: what a user waits for.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {  # model node per family: other classes, other arguments
    "vae": {"_target_": "genlab.models.vae.VAE", "net": {"_target_": "genlab.nets.conv_vae.ConvVAE",
            "image_shape": "${data.image_shape}", "latent_dim": 16, "channels": [32, 64]}, "beta": 1.0},
    "gan": {"_target_": "genlab.models.gan.GAN", "net": {"_target_": "genlab.nets.dcgan.DCGAN",
            "image_shape": "${data.image_shape}", "latent_dim": 64, "ngf": 32, "ndf": 32}},
    "ddpm": {"_target_": "genlab.models.ddpm.DDPM", "net": {"_target_": "genlab.nets.unet.UNet",
             "image_shape": "${data.image_shape}", "base_channels": 32}, "num_train_timesteps": 1000},
}  # fmt: skip


def config(model: str, lr: float, seed: int) -> str:
    import yaml

    cfg = {
        "experiment_name": f"mnist_{model}",
        "seed": seed,
        "tags": ["mnist5k", model],
        "test": True,
        "objective": {"metric": "val/loss", "mode": "min"},
        "data": {
            "_target_": "genlab.data.images.ImageDataModule",
            "dataset": "mnist5k",
            "root": "${paths.data_dir}",
            "image_shape": [1, 28, 28],
            "value_range": [-1.0, 1.0],
            "splits": [0.8, 0.1, 0.1],
            "batch_size": 64,
            "num_workers": 0,
            "seed": "${seed}",
        },
        "model": MODELS[model],
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr, "betas": [0.9, 0.999]},
        "scheduler": {"_target_": "genlab.optim.cosine", "_partial_": True, "min_lr_ratio": 0.1},
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "devices": 1,
            "precision": "32-true",
            "max_epochs": 10,
            "max_steps": -1,
            "log_every_n_steps": 10,
            "deterministic": False,
            "default_root_dir": "${paths.output_dir}",
        },
        "logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": "${paths.output_dir}",
                           "name": "csv", "version": ""}},
        "callbacks": {
            "checkpoint": {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "dirpath": "${paths.output_dir}/checkpoints", "monitor": "val/loss", "mode": "min"},
            "sample_grid": {"_target_": "genlab.callbacks.samples.SampleGrid", "n": 64, "seed": "${seed}"},
        },
        "paths": {"data_dir": "${oc.env:GENLAB_DATA_DIR,data}", "output_dir": "${hydra:runtime.output_dir}"},
    }  # fmt: skip
    return yaml.safe_dump(cfg, sort_keys=False)


def make_runs(root: Path, n: int, rows: int = 50) -> None:
    """A multirun folder of `n` jobs: models x learning rates x seeds, a few failed or interrupted."""
    rng = random.Random(0)
    for i in range(n):
        model, lr, seed = list(MODELS)[i % 3], [1e-3, 2e-3][(i // 3) % 2], i // 6
        run = root / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / "csv").mkdir()
        (run / ".hydra" / "config.yaml").write_text(config(model, lr, seed))
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- model={model}\n- optimizer.lr={lr}\n- seed={seed}\n"
        )
        status = "failed" if i % 17 == 5 else "interrupted" if i % 23 == 7 else "completed"
        final = 0.5 + 0.3 * rng.random()
        with open(run / "csv" / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "lr-Adam", "step", "train/loss", "val/loss"])
            for r in range(rows):
                step, loss = r * 10, final + 2.0 / (1 + r)
                if r % 5 == 4:  # validation rows are sparse, as Lightning writes them
                    writer.writerow([r // 5, "", step, "", f"{loss + 0.05:.5f}"])
                else:
                    writer.writerow([r // 5, f"{lr:g}", step, f"{loss:.5f}", ""])
        metrics = {"train/loss": final, "val/loss": final + 0.05, "test/loss": final + 0.06}
        record = {
            "status": status, "task": "train", "experiment": f"mnist_{model}", "seed": seed,
            "overrides": [f"model={model}", f"optimizer.lr={lr}", f"seed={seed}"], "tags": [],
            "command": "genlab train ...", "run_dir": str(run), "git": {"commit": "0" * 40, "dirty": False},
            "versions": {}, "hardware": {}, "started": "2026-01-01T10:00:00+00:00",
            "finished": "2026-01-01T10:05:00+00:00", "wall_time_s": 300.0 + i, "steps": rows * 10,
            "metrics": metrics if status == "completed" else {}, "best_checkpoint": None,
            "error": "RuntimeError: boom" if status == "failed" else None,
        }  # fmt: skip
        (run / "run.json").write_text(json.dumps(record, indent=2))


def time_compare(args: list[str], repeat: int) -> tuple[float, float]:
    """Best of `repeat` (wall, CPU) seconds of a fresh `genlab compare` process. On a shared machine the
    best run is the stablest, and CPU time (user + system) says what the command costs given a free core."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        command = [sys.executable, "-m", "genlab.cli", "compare", *args]
        result = subprocess.run(command, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            raise SystemExit(f"genlab compare {' '.join(args)} failed:\n{result.stderr}")
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "multirun"
        make_runs(root, args.runs)
        baseline = time_compare_python(args.repeat)
        cases = [
            ("table only", [str(root), "--no-plots"]),
            ("table + plots", [str(root)]),
            ("html (+ plots)", [str(root), "--format", "html"]),
            ("md, --by model", [str(root), "--by", "model._target_", "--format", "md"]),
        ]
        print(
            f"genlab compare on {args.runs} run dirs (best of {args.repeat}; python start alone: {baseline:.2f}s)"
        )
        print(f"{'case':<18} {'wall s':>7} {'cpu s':>7}")
        for name, case_args in cases:
            wall, cpu = time_compare(case_args, args.repeat)
            print(f"{name:<18} {wall:>7.2f} {cpu:>7.2f}")


def time_compare_python(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    main()
