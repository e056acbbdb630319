"""DDP under Hydra on CPU (gloo): ranks > 0 re-run the job they belong to, never the sweep."""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import Tensor

from genlab.models.vae import VAE
from genlab.nets.conv_vae import ConvVAE
from tests.conftest import REPO, run_genlab

DDP_CPU = ["debug=fast", "trainer=ddp_cpu", "trainer.devices=2"]  # debug=fast alone pins one device


def test_multirun_of_ddp_jobs_gives_one_run_dir_per_job_with_matching_ranks(tmp_path: Path):
    sweep, cwd = tmp_path / "sweep", tmp_path / "cwd"
    cwd.mkdir()
    result = run_genlab("train", "-m", *DDP_CPU, "seed=1,2", f"hydra.sweep.dir={sweep}", cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/run.json")}
    assert sorted(records) == ["0", "1"]
    assert [records[job]["status"] for job in ("0", "1")] == ["completed", "completed"]
    assert not any(cwd.iterdir()), "a rank re-ran the sweep and left a stray output folder"

    # every rank of a job trains with that job's overrides: rank 1 seeds what its rank 0 seeded
    log = result.stdout + result.stderr
    seeds = re.findall(r"\[rank: (\d)\] Seed set to (\d+)", log)
    assert ("1", "1") in seeds and ("1", "2") in seeds, seeds
    assert len(re.findall(r"Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2", log)) == 2


# --- DDP equivalence: two shards of B average to one batch of 2B ----------------------------------------------


class ExampleNoiseVAE(VAE):
    """genlab's VAE with its posterior noise tied to each example instead of to the batch layout.

    The VAE draws `eps` from the global RNG (reseeded per step and rank): one process drawing 2B rows and two
    ranks drawing B rows each give an image other noise. Here each image's `eps` is seeded by its pixels and
    the step, so both layouts see the same noise per image and the runs may differ only by how DDP combines
    the gradients. The loss itself is the VAE's own code.
    """

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        eps = torch.stack([_example_noise(image, self.global_step, self.net.latent_dim) for image in images])

        def randn_like(like: Tensor) -> Tensor:
            assert like.shape == eps.shape, "the VAE drew noise of another shape than the posterior's"
            return eps.to(like)

        with mock.patch.object(torch, "randn_like", randn_like):
            return super().training_step(batch, batch_idx)

    def on_train_start(self) -> None:
        if self.trainer.is_global_zero:  # the weights every layout starts from (DDP broadcast rank 0's)
            torch.save(self.state_dict(), Path(self.trainer.default_root_dir) / "initial.pt")


def _example_noise(image: Tensor, step: int, latent_dim: int) -> Tensor:
    digest = hashlib.blake2b(image.cpu().numpy().tobytes() + step.to_bytes(8, "little"), digest_size=7)
    return torch.randn(latent_dim, generator=torch.Generator().manual_seed(int.from_bytes(digest.digest())))


def _trained_weights(run_dir: Path) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["steps"] == STEPS, record
    final = torch.load(run_dir / record["best_checkpoint"], weights_only=True)["state_dict"]
    return torch.load(run_dir / "initial.pt", weights_only=True), final


B, STEPS = 8, 4  # per-rank batch; optimisation steps


def test_ddp_two_shards_of_b_equal_one_process_with_2b(tmp_path: Path):
    """DDP averages the two ranks' gradients: after K SGD steps its weights equal one process's with 2B.

    The training split holds exactly 2B images and each epoch is one step, so every step of either layout
    covers the whole split: the comparison does not depend on the order of examples (Lightning's DDP sampler
    re-shuffles the datamodule's order, so the same step of the two layouts would see other images).
    """
    common = [
        "debug=fast",
        "data.max_samples=20",  # splits 0.8/0.1/0.1: 16 = 2B training images
        f"trainer.max_epochs={STEPS}",
        "trainer.limit_val_batches=1",
        "optimizer=sgd",  # the update is linear in the gradient: weight differences show gradient differences
        "optimizer.lr=1e-4",
        "test=false",
        "~callbacks.sample_grid",
        f"model._target_={__name__}.{ExampleNoiseVAE.__name__}",
    ]
    runs = {
        "ddp": [*DDP_CPU, f"data.batch_size={B}"],
        "single": [f"data.batch_size={2 * B}"],
    }
    env = {"PYTHONPATH": str(REPO)}  # every rank imports ExampleNoiseVAE from this file
    with ThreadPoolExecutor(len(runs)) as pool:  # two cores: the reference trains while DDP starts
        futures = {
            name: pool.submit(
                run_genlab, "train", *common, *extra, f"hydra.run.dir={tmp_path / name}", env=env, timeout=300
            )
            for name, extra in runs.items()
        }
    for name, future in futures.items():
        result = future.result()
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"

    initial, single = _trained_weights(tmp_path / "single")
    initial_ddp, ddp = _trained_weights(tmp_path / "ddp")
    assert all(torch.equal(initial[k], initial_ddp[k]) for k in initial), (
        "the runs started from other weights"
    )
    assert single.keys() == ddp.keys() == initial.keys()
    diff = max((ddp[k] - single[k]).abs().max().item() for k in single)
    moved = max((single[k] - initial[k]).abs().max().item() for k in single)
    print(
        f"DDP 2 x {B} vs 1 x {2 * B}, {STEPS} steps: max |weight diff| {diff:.3g}, max |update| {moved:.3g}"
    )
    # training moved the weights far more than the runs differ: a summed gradient (twice the step) or one
    # rank's gradient alone (another batch) would differ by about as much as the weights moved
    assert moved > 1e-2
    assert diff < 1e-5 * moved

    # the same weights give the same loss: the VAE's ELBO on fixed images and fixed noise
    net = ConvVAE(image_shape=[1, 28, 28], latent_dim=16, channels=[32, 64], hidden_dim=256)
    images = torch.rand(2 * B, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    losses = {}
    for name, weights in (("single", single), ("ddp", ddp), ("initial", initial)):
        module = VAE(net)
        module.load_state_dict(weights)
        module.log = module.log_dict = lambda *args, **kwargs: None  # no trainer to log to
        with (
            torch.no_grad(),
            mock.patch.object(torch, "randn_like", lambda like: torch.ones_like(like) * 0.5),
        ):
            losses[name] = module.training_step((images, images[:, 0, 0, 0]), 0).item()
    assert losses["ddp"] == pytest.approx(losses["single"], rel=1e-6)
    assert abs(losses["single"] - losses["initial"]) > 1e3 * abs(losses["ddp"] - losses["single"])
