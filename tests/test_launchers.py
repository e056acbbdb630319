"""The SLURM launcher config: it composes, and the sbatch script submitit would submit asks for what the
config says (one task per device for Lightning's SLURM environment). Nothing is submitted."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from tests.conftest import CONF, run_genlab

submitit = pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


class _Submitted(Exception):
    """Raised where submitit would call sbatch, carrying the script it wrote."""

    def __init__(self, script: str):
        self.script = script


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
        return compose(
            "train", overrides=["hydra/launcher=submitit_slurm", *overrides], return_hydra_config=True
        )


def _sbatch_script(cfg: DictConfig, jobs: list[list[str]]) -> str:
    """The sbatch script submitit writes for `jobs` through genlab's launcher config, stopped before sbatch."""
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)

    def stop_before_sbatch(executor, path: Path) -> list[str]:
        raise _Submitted(path.read_text())

    with (
        mock.patch.object(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1)),  # "srun is here"
        mock.patch.object(submitit.SlurmExecutor, "_make_submission_command", stop_before_sbatch),
        pytest.raises(_Submitted) as submitted,
    ):
        launcher.launch(jobs, initial_job_idx=0)
    return submitted.value.script


def test_slurm_job_spec_follows_trainer_and_launcher_config(tmp_path: Path):
    cfg = _compose(
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.account=proj42",
        "hydra.launcher.setup=[module load cuda]",
        f"hydra.sweep.dir={tmp_path}",
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    # Lightning's SLURMEnvironment needs ntasks-per-node == trainer.devices and nodes == trainer.num_nodes
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)

    script = _sbatch_script(cfg, [["seed=1"], ["seed=2"]])
    flags = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for flag in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--time=90",
        "--partition=gpu",
        "--account=proj42",
        "--job-name=train",
        "--signal=USR2@120",
        "--array=0-1%2",  # one array task per Hydra job
    ):
        assert f"#SBATCH {flag}" in flags, (flag, flags)
    assert f"--output={tmp_path}/.submitit/%A_%a/%A_%a_0_log.out" in script
    setup, command = script.index("module load cuda"), script.index("srun --unbuffered")
    assert setup < command  # setup lines run before the tasks start
    assert "-m submitit.core._submit" in script[command:]


def test_slurm_launcher_defaults_give_one_gpu_task():
    launcher = _compose().hydra.launcher  # trainer=default: one device on one node
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.timeout_min == 240 and launcher.max_num_timeout == 0


def test_cli_composes_the_slurm_launcher(tmp_path):
    result = run_genlab(
        "train",  # as `genlab train -m ...` would launch it (Hydra prints configs only outside -m)
        "hydra/launcher=submitit_slurm",
        "trainer=ddp",
        "trainer.devices=2",
        "hydra.launcher.partition=gpu",
        "--cfg",
        "all",  # the launcher's task counts read the trainer's, outside the hydra node
        "--resolve",
        "-p",
        "hydra.launcher",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # the submitit folder names the sweep dir: printing it claims no folder
    assert "submitit_folder: outputs/train/multirun/" in result.stdout
    assert not (tmp_path / "outputs").exists()
    assert "SlurmLauncher" in result.stdout
    assert "tasks_per_node: 2" in result.stdout and "partition: gpu" in result.stdout
