"""ms per training step of `genlab train` against a plain PyTorch loop of the same net, batch, loss and optimiser.

    python benchmarks/overhead.py                                   # every experiment (~15 min on 2 cores)
    python benchmarks/overhead.py --families vae,gpt --repeats 400  # by experiment, model or family name
    python benchmarks/overhead.py --families ddpm --repeats 60      # DDPM's steps take ~1 s here
    python benchmarks/overhead.py --steps 3 --repeats 1 --families vae --no-memory   # smoke run

One process per experiment, one torch thread. For each experiment of conf/experiment/ whose module has a
plain loop here, `genlab.train.run` trains the composed recipe (its own callbacks, logger and trainer;
`threads=1`, `test=false`, no FID, a private cache folder) with one extra callback, `Interleave`. When
training starts it copies the module's freshly initialised nets into a plain loop: the same nets, loss,
optimiser and scheduler (built from the same partials), batches drawn from the same seed in the same order,
and each step's noise from the same per-step seed. From then on the two take turns of `--steps` steps (plain,
genlab, genlab, plain, plain, ...): the plain turn runs inside the callback between two genlab steps, so both
loops see the same machine load within a second. A genlab step is the time from one `on_train_batch_start`
to the next; steps that hold an epoch end, a validation or a checkpoint save are left out (with their plain
partners) and reported apart. Times are CPU time of the process (what other jobs on a shared machine inflate
least) and wall time; each figure is the mean step over `--chunk` consecutive steps of a loop, and the table
shows the median and quartiles of those figures, and of genlab's ratio to the plain loop's.

The plain loop runs as in a process that never imported Lightning (see `_as_without_lightning`). After the
last step it catches up with genlab's step count and every weight (EMA copies included) is compared with
`torch.equal`: the proof that both loops did the same work.

Peak memory is measured in child processes, one per loop (`--no-memory` skips them): the peak resident set
size while training `--memory-steps` steps, above the resident size when training started.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.callbacks.resume import step_seed

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"

# ---------------------------------------------------------------------------------------------------------
# plain loops: one family's training step in plain PyTorch, on copies of a genlab module's initial nets


class ImageBatches:
    """The train split's batches in the order genlab's sampler gives them: one permutation per epoch drawn
    from a generator seeded like the datamodule's sampler, full batches only, floats in `value_range`."""

    def __init__(self, datamodule: Any) -> None:
        train = datamodule.data["train"]
        self.images, self.labels = train.images, train.labels  # uint8 [N, C, H, W], long [N]
        self.scale, self.offset = train.scale, train.offset
        self.batch_size = datamodule.batch_size
        n = len(self.labels)
        self.batches_per_epoch = n // self.batch_size if n >= self.batch_size else 1
        self.generator = torch.Generator().manual_seed(datamodule.sampler.seed)
        self.order: Tensor | None = None
        self.epoch, self.index = -1, self.batches_per_epoch

    def next(self) -> tuple[int, int, tuple[Tensor, Tensor]]:
        """(epoch, batch index in the epoch, (images, labels))."""
        if self.index == self.batches_per_epoch:
            self.order = torch.randperm(len(self.labels), generator=self.generator)
            self.epoch, self.index = self.epoch + 1, 0
        i, b = self.index, self.batch_size
        idx = self.order[i * b : (i + 1) * b]
        self.index += 1
        return self.epoch, i, (self.images[idx].float() * self.scale + self.offset, self.labels[idx])


class TextBatches:
    """Random windows of the train tokens, drawn as genlab's text datamodule draws them (its seed, rank 0)."""

    def __init__(self, datamodule: Any) -> None:
        self.tokens = datamodule.train_tokens  # int32 [N]
        self.block_size, self.batch_size = datamodule.block_size, datamodule.batch_size
        self.batches_per_epoch = datamodule.batches_per_epoch
        self.generator = torch.Generator().manual_seed(datamodule.seed)
        self.offsets = torch.arange(self.block_size + 1)
        self.drawn = 0

    def next(self) -> tuple[int, int, tuple[Tensor, Tensor]]:
        starts = torch.randint(
            len(self.tokens) - self.block_size, (self.batch_size,), generator=self.generator
        )
        windows = self.tokens[starts[:, None] + self.offsets].long()  # (B, T + 1)
        epoch, index = divmod(self.drawn, self.batches_per_epoch)
        self.drawn += 1
        return epoch, index, (windows[:, :-1], windows[:, 1:])


class PlainLoop:
    """Base: `nets` mirrors the module's children by name (so state_dict keys match), `step()` trains one batch."""

    def __init__(self, module: L.LightningModule, batches: Any, seed: int) -> None:
        self.batches = batches
        self.seed = seed
        self.steps = 0
        self.nets = nn.ModuleDict()

    def step(self) -> Tensor:
        """One training step; returns its (detached) loss."""
        epoch, index, batch = self.batches.next()
        # genlab reseeds before every step (callbacks.resume.StepSeed); the same seed gives the same noise.
        # The CPU generator alone: torch.manual_seed would also queue seeds for CUDA, XPU and MTIA
        torch.default_generator.manual_seed(step_seed(self.seed, epoch, index, 0))
        loss = self.train_step(batch)
        self.steps += 1
        return loss.detach()

    def train_step(self, batch: Any) -> Tensor:
        raise NotImplementedError

    def weights(self) -> dict[str, Tensor]:
        return self.nets.state_dict()


def _optimizer(module: Any, params: Any, lr: float | None = None) -> torch.optim.Optimizer:
    factory = module.optimizer_factory
    return factory(params) if lr is None else factory(params, lr=lr)


class PlainVAE(PlainLoop):
    def __init__(self, module: Any, trainer: L.Trainer, seed: int) -> None:
        super().__init__(module, ImageBatches(trainer.datamodule), seed)
        if module.recon_loss != "bce":
            raise NotImplementedError("the plain VAE loop has the Bernoulli decoder (recon_loss=bce) only")
        self.nets["net"] = self.net = copy.deepcopy(module.net)
        self.beta = module.beta
        self.optimizer = _optimizer(module, self.net.parameters())
        self.scheduler = _scheduler(module, self.optimizer, trainer.estimated_stepping_batches)

    def train_step(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, _ = batch
        target = (x + 1.0) / 2.0
        mu, logvar = self.net.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = F.binary_cross_entropy_with_logits(self.net.decode(z), target, reduction="none")
        recon = recon.flatten(1).sum(dim=1).mean()
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)).mean()
        loss = recon + self.beta * kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        _step(self.scheduler)
        return loss


class PlainDiffusion(PlainLoop):
    def __init__(self, module: Any, trainer: L.Trainer, seed: int) -> None:
        from torch.optim.swa_utils import AveragedModel

        from genlab.models.ema import ema_with_warmup

        super().__init__(module, ImageBatches(trainer.datamodule), seed)
        self.nets["net"] = self.net = copy.deepcopy(module.net)
        if module.ema is not None:
            decay = module.hparams.ema_decay
            self.nets["ema"] = AveragedModel(self.net, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)
            self.nets["ema"].requires_grad_(False)
        self.schedule, self.prediction_type = module.schedule, module.prediction_type  # pure torch
        self.optimizer = _optimizer(module, self.net.parameters())
        self.scheduler = _scheduler(module, self.optimizer, trainer.estimated_stepping_batches)

    def train_step(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x0 = batch[0]
        t = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],))
        noise = torch.randn_like(x0)
        x_t = self.schedule.add_noise(x0, noise, t)
        target = self.schedule.target(x0, noise, t, self.prediction_type)
        loss = F.mse_loss(self.net(x_t, t), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if "ema" in self.nets:
            self.nets["ema"].update_parameters(self.net)
        _step(self.scheduler)
        return loss


class PlainGAN(PlainLoop):
    """One discriminator step, then one generator step with the discriminator frozen, then the EMA update."""

    def __init__(self, module: Any, trainer: L.Trainer, seed: int) -> None:
        from torch.optim.swa_utils import AveragedModel

        from genlab.models.ema import ema_with_warmup

        super().__init__(module, ImageBatches(trainer.datamodule), seed)
        if module.n_critic != 1 or module.loss == "wgan_gp" or module.grad_clip is not None:
            raise NotImplementedError("the plain GAN loop has n_critic=1, no gradient penalty, no clipping")
        if module.scheduler_factory is not None:
            raise NotImplementedError("the plain GAN loop has no scheduler")
        self.nets["generator"] = self.g = copy.deepcopy(module.generator)
        self.nets["discriminator"] = self.d = copy.deepcopy(module.discriminator)
        if module.generator_ema is not None:
            update = ema_with_warmup(float(module.hparams.ema_decay))
            self.nets["generator_ema"] = AveragedModel(self.g, multi_avg_fn=update, use_buffers=True)
            self.nets["generator_ema"].requires_grad_(False)
        self.loss, self.latent_dim = module.loss, module.latent_dim
        self.opt_g = _optimizer(module, self.g.parameters(), module.lr_g)
        self.opt_d = _optimizer(module, self.d.parameters(), module.lr_d)

    def train_step(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        from genlab.models.gan_losses import discriminator_loss, generator_loss  # pure tensor functions

        real = batch[0]
        b = real.shape[0]
        with torch.no_grad():
            fake = self.g(torch.randn(b, self.latent_dim))
        d_loss = discriminator_loss(self.loss, self.d(real), self.d(fake))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        self.d.requires_grad_(False)  # the generator's step trains the generator only
        g_loss = generator_loss(self.loss, self.d(self.g(torch.randn(b, self.latent_dim))))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.d.requires_grad_(True)
        if "generator_ema" in self.nets:
            self.nets["generator_ema"].update_parameters(self.g)
        return d_loss


class PlainLM(PlainLoop):
    """Next-token cross-entropy, AdamW with decay on matrices only, gradient clipping as `trainer.gradient_clip_val`."""

    def __init__(self, module: Any, trainer: L.Trainer, seed: int) -> None:
        super().__init__(module, TextBatches(trainer.datamodule), seed)
        self.nets["net"] = self.net = copy.deepcopy(module.net)
        params = list(self.net.parameters())
        groups = [{"params": [p for p in params if p.dim() >= 2]}]
        if any(p.dim() < 2 for p in params):
            groups.append({"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0})
        self.optimizer = _optimizer(module, groups)
        self.scheduler = _scheduler(module, self.optimizer, trainer.estimated_stepping_batches)
        self.clip = trainer.gradient_clip_val
        if trainer.gradient_clip_algorithm not in (None, "norm"):
            raise NotImplementedError("the plain LM loop clips by norm only")

    def train_step(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x).flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:  # over the optimiser's parameters in its order, as Lightning does
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.clip)
        self.optimizer.step()
        _step(self.scheduler)
        return loss


class PlainClassifier(PlainLoop):
    """Cross-entropy on images shifted by up to `max_shift` pixels (genlab's augmentation, written out)."""

    def __init__(self, module: Any, trainer: L.Trainer, seed: int) -> None:
        super().__init__(module, ImageBatches(trainer.datamodule), seed)
        self.nets["net"] = self.net = copy.deepcopy(module.net)
        self.max_shift, self.label_smoothing = module.max_shift, module.label_smoothing
        self.optimizer = _optimizer(module, self.net.parameters())
        self.scheduler = _scheduler(module, self.optimizer, trainer.estimated_stepping_batches)

    def shift(self, x: Tensor) -> Tensor:
        if self.max_shift == 0:
            return x
        b, _, h, w = x.shape
        pixels = torch.randint(-self.max_shift, self.max_shift + 1, (b, 2)).to(x.dtype)
        theta = torch.zeros(b, 2, 3, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = -pixels[:, 0] * 2 / w
        theta[:, 1, 2] = -pixels[:, 1] * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)

    def train_step(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(self.shift(x)), y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        _step(self.scheduler)
        return loss


# the module class each experiment's `model._target_` names -> its plain loop
PLAIN_LOOPS = {
    "genlab.models.vae.VAE": PlainVAE,
    "genlab.models.diffusion.Diffusion": PlainDiffusion,
    "genlab.models.gan.GAN": PlainGAN,
    "genlab.models.lm.CausalLM": PlainLM,
    "genlab.models.classifier.Classifier": PlainClassifier,
}


def _scheduler(module: Any, optimizer: torch.optim.Optimizer, total_steps: float) -> Any:
    """The module's scheduler partial over the same total steps genlab gives it (the trainer's estimate)."""
    if module.scheduler_factory is None:
        return None
    return module.scheduler_factory(optimizer, total_steps=max(1, int(total_steps)))


def _step(scheduler: Any) -> None:
    if scheduler is not None:
        scheduler.step()


def _clocks() -> tuple[float, float]:
    """(wall, CPU) seconds: the CPU time of this process (all its threads) is what other users' jobs on a
    shared machine do not inflate, as long as they leave the caches alone."""
    return time.perf_counter(), time.process_time()


@contextmanager
def _as_without_lightning() -> Iterator[None]:
    """The plain loop runs as in a process that never imported Lightning, whose import sets
    PYTORCH_NVML_BASED_CUDA_CHECK=1: with a CUDA build of torch and no initialised GPU, every
    `torch.cuda.is_available()` then opens the NVML library again, and torch's optimisers ask at each step."""
    saved = os.environ.pop(NVML_CHECK, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[NVML_CHECK] = saved


# ---------------------------------------------------------------------------------------------------------
# the callback that interleaves the plain loop with genlab's steps and times both


class Interleave(L.Callback):
    """Times genlab's steps and runs the plain loop in blocks between them (see the module docstring).

    Batches 0..warmup-1 warm up (the plain loop warms up as many steps when training starts); then `repeats`
    blocks of `steps` batches are timed. Plain block r runs before genlab block r when r is even and after
    it when r is odd (plain, genlab, genlab, plain, plain, genlab, ...), so a slow drift of the machine's
    load favours neither loop. One more batch gives the last block its end; then training stops.
    """

    last: Interleave | None = None  # the benchmark reads the results of the run it just started

    def __init__(self, seed: int, warmup: int, steps: int, repeats: int) -> None:
        self.seed = int(seed)  # the run's seed, which genlab's per-step seeds derive from
        self.warmup, self.steps, self.repeats = int(warmup), max(1, int(steps)), max(1, int(repeats))
        self.total = self.warmup + self.steps * self.repeats + 1  # genlab batches in all
        # (wall, CPU) seconds of each step, per block; genlab's steps with an epoch end, validation or
        # checkpoint in them go to `events` instead, as (what, (wall, CPU), block)
        self.genlab: list[list[tuple[float, float]]] = [[] for _ in range(self.repeats)]
        self.plain: list[list[tuple[float, float]]] = [[] for _ in range(self.repeats)]
        self.events: list[tuple[str, tuple[float, float], int]] = []
        self.loop: PlainLoop | None = None
        self.losses: dict[str, list[Tensor]] = {"plain": [], "genlab": []}  # each step's training loss
        self.batches = 0  # genlab batches started
        self.equal: bool | None = None
        self.max_abs_diff: float | None = None
        self.unequal: list[str] = []
        self._since: tuple[float, float] | None = None
        self._tags: set[str] = set()
        Interleave.last = self

    # plain block r runs at boundary r (even r) or r + 1 (odd r); boundary b is the start of genlab block b
    def _plain_blocks_at(self, boundary: int) -> list[int]:
        return [r for r in range(self.repeats) if (r if r % 2 == 0 else r + 1) == boundary]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
        self.loop = PLAIN_LOOPS[target](pl_module, trainer, self.seed)
        self.loop.nets.train()
        with torch.enable_grad(), _as_without_lightning():
            for _ in range(self.warmup):
                self.losses["plain"].append(self.loop.step())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = _clocks()
        k = self.batches  # index of this batch
        if self._since is not None and self.warmup <= k - 1 < self.total - 1:
            block = (k - 1 - self.warmup) // self.steps
            took = (now[0] - self._since[0], now[1] - self._since[1])
            if self._tags:
                self.events += [(tag, took, block) for tag in sorted(self._tags)]
            else:
                self.genlab[block].append(took)
        self._tags = set()
        if self.between_steps(trainer, k):
            now = _clocks()  # genlab's next step starts now
        self._since = now
        self.batches += 1

    def between_steps(self, trainer: L.Trainer, k: int) -> bool:
        """Untimed-by-genlab work before genlab's batch `k`: the plain blocks due there. True if any ran."""
        if k < self.warmup or (k - self.warmup) % self.steps:
            return False
        blocks = self._plain_blocks_at((k - self.warmup) // self.steps)
        for block in blocks:
            self._run_plain(block)
        return bool(blocks)

    def _run_plain(self, block: int) -> None:
        with torch.enable_grad(), _as_without_lightning():
            for _ in range(self.steps):
                start = _clocks()
                loss = self.loop.step()
                end = _clocks()
                self.plain[block].append((end[0] - start[0], end[1] - start[1]))
                self.losses["plain"].append(loss)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        if isinstance(outputs, dict) and "loss" in outputs:
            self.losses["genlab"].append(outputs["loss"].detach())
        if self.batches >= self.total:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tags.add("epoch end")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tags.add("validation")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._tags.add("checkpoint")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.enable_grad(), _as_without_lightning():
            while self.loop.steps < self.batches:  # as many steps as genlab took
                self.losses["plain"].append(self.loop.step())
        ours = pl_module.state_dict()
        theirs = self.loop.weights()
        self.unequal = [k for k, v in theirs.items() if not torch.equal(v, ours[k])]
        self.equal = not self.unequal
        diffs = [(theirs[k].double() - ours[k].double()).abs().max().item() for k in self.unequal]
        self.max_abs_diff = max(diffs, default=0.0)


# ---------------------------------------------------------------------------------------------------------
# composing and running `genlab train` in this process


def compose(experiment: str, out_dir: Path, overrides: list[str] = ()) -> Any:
    """The config `genlab train experiment=<experiment> <overrides>` runs, with Hydra's own config set, as
    Hydra sets it before calling the task function (which reads it for the run record and DDP)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from genlab.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(
            "train", overrides=[f"experiment={experiment}", *overrides], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def experiments(names: str | None = None, every: bool = False) -> dict[str, dict[str, str]]:
    """Shipped experiments (conf/experiment/) with their module class (`target`) and its name (`family`),
    chosen by `names`: comma-separated experiment names (`mnist_vae`), their part after the dataset (`vae`,
    `gan`, `ddpm`, `gpt`) or module classes (`diffusion`, `causallm`). No names: every experiment that has a
    plain loop here, or every one with `every`."""
    from genlab.config import conf_dir

    stems = sorted(path.stem for path in (conf_dir() / "experiment").glob("*.yaml"))
    words = [word.strip().lower() for word in (names or "").split(",") if word.strip()]

    def by_name(word: str) -> list[str]:
        return [stem for stem in stems if word in (stem, stem.split("_", 1)[-1])]

    # composing is slow: only the experiments named, unless a word names a class
    named = all(by_name(word) for word in words)
    found = {}
    for stem in [s for w in words for s in by_name(w)] if words and named else stems:
        with tempfile.TemporaryDirectory() as tmp:
            target = compose(stem, Path(tmp)).model._target_
        found[stem] = {"target": target, "family": target.rsplit(".", 1)[-1]}
    if not words:
        return {name: info for name, info in found.items() if every or info["target"] in PLAIN_LOOPS}
    chosen = {}
    for word in words:
        hits = [
            name
            for name, info in found.items()
            if word in (name, name.split("_", 1)[-1], info["family"].lower())
        ]
        if not hits:
            raise SystemExit(f"--families: no experiment matches {word!r}; there are {', '.join(stems)}")
        chosen.update({name: found[name] for name in hits})
    return chosen


def train(experiment: str, out_dir: Path, extra_callbacks: dict[str, dict], overrides: list[str]) -> None:
    """`genlab.train.run` on the composed experiment plus `extra_callbacks`; FID (a train-end cost) off, and
    a cache folder of its own (the classifier recipe would publish its checkpoint to the user's)."""
    from omegaconf import open_dict

    from genlab.train import run

    cache = out_dir / "cache"
    cfg = compose(experiment, out_dir, ["threads=1", "test=false", f"paths.cache_dir={cache}", *overrides])
    with open_dict(cfg):
        if "fidelity" in (cfg.get("callbacks") or {}):
            cfg.callbacks.fidelity = None
        for name, node in extra_callbacks.items():
            cfg.callbacks[name] = node
    argv = list(sys.argv)
    try:
        run(cfg)
    finally:
        sys.argv = argv  # `run` pins sys.argv for DDP's relaunch


def _target(cls: type) -> str:
    module = cls.__module__
    if module == "__main__":  # run as a script: Hydra imports `__main__` by that name as well
        return f"__main__.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


def measure(
    experiment: str, warmup: int, steps: int, repeats: int, overrides: list[str], chunk: int = 10
) -> dict[str, Any]:
    """Time both loops; each figure is the mean step of `chunk` consecutive steps of a loop (whole turns,
    turns whose genlab step held a periodic event left out with their plain partner), so the lists hold one
    figure per chunk and `ratio`/`extra_ms` compare the two loops chunk by chunk."""
    with tempfile.TemporaryDirectory() as tmp:
        node = {
            "_target_": _target(Interleave),
            "seed": "${seed}",
            "warmup": warmup,
            "steps": steps,
            "repeats": repeats,
        }
        train(experiment, Path(tmp) / "run", {"interleave": node}, overrides)
    timer = Interleave.last
    if timer is None or timer.equal is None:
        raise SystemExit(f"{experiment}: training stopped before the timed steps ran")
    result: dict[str, Any] = {"experiment": experiment, **summarize(timer, chunk)}
    result.update(
        equal=timer.equal,
        unequal=timer.unequal[:5],
        max_abs_diff=timer.max_abs_diff,
        steps_compared=timer.batches,
    )
    return result


def summarize(timer: Interleave, chunk: int = 10) -> dict[str, Any]:
    """Per clock (wall, cpu): each loop's mean step over runs of `chunk` steps (whole turns; turns whose genlab
    step held a periodic event are left out with their plain partner), genlab's ratio and excess per run,
    and each periodic event's time above genlab's median step."""
    pairs = [(g, p) for g, p in zip(timer.genlab, timer.plain) if g and p]
    turns = max(1, min(len(pairs), math.ceil(chunk / timer.steps)))
    chunks = [pairs[c : c + turns] for c in range(0, len(pairs) - turns + 1, turns)]
    result: dict[str, Any] = {"steps_per_figure": turns * timer.steps}
    for i, clock in enumerate(("wall", "cpu")):
        genlab = [statistics.fmean(t[i] for g, _ in part for t in g) * 1e3 for part in chunks]
        plain = [statistics.fmean(t[i] for _, p in part for t in p) * 1e3 for part in chunks]
        typical = statistics.median(genlab)
        events: dict[str, list[float]] = {}
        for what, took, _ in timer.events:
            events.setdefault(what, []).append(took[i] * 1e3 - typical)
        result[clock] = {
            "genlab_ms": genlab,
            "plain_ms": plain,
            "ratio": [g / q for g, q in zip(genlab, plain)],
            "extra_ms": [g - q for g, q in zip(genlab, plain)],
            "events_extra_ms": events,
        }
    return result


# ---------------------------------------------------------------------------------------------------------
# peak memory, one child process per loop


def _status(field: str) -> int:
    """A /proc/self/status field in MiB (VmRSS: resident now, VmHWM: peak resident since the last reset)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) // 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


class MemoryProbe(L.Callback):
    """In a child process: peak RSS above the RSS at the start of training, over `steps` genlab steps."""

    result: dict[str, int] = {}

    def __init__(self, steps: int) -> None:
        self.steps, self.batches = int(steps), 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        MemoryProbe.result = {"before_mib": _status("VmHWM")}
        _reset_peak()
        MemoryProbe.result["start_mib"] = _status("VmRSS")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batches += 1
        if self.batches == self.steps:
            MemoryProbe.result["peak_mib"] = _status("VmHWM")
            trainer.should_stop = True


def memory_child(loop: str, experiment: str, steps: int, overrides: list[str]) -> dict[str, int]:
    torch.set_num_threads(1)
    if loop == "genlab":
        with tempfile.TemporaryDirectory() as tmp:
            node = {"_target_": _target(MemoryProbe), "steps": steps}
            train(experiment, Path(tmp) / "run", {"memory": node}, overrides)
        return MemoryProbe.result
    # the plain loop: the same objects, built without a Trainer (it only reads the datamodule and budget)
    from hydra.utils import instantiate

    from genlab.build import build_datamodule, build_partial

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(experiment, Path(tmp), overrides)
        L.seed_everything(cfg.seed, verbose=False)
        datamodule = build_datamodule(cfg)
        module = instantiate(
            cfg.model,
            optimizer=build_partial(cfg, "optimizer"),
            scheduler=build_partial(cfg, "scheduler"),
            _convert_="all",
        )
        budget = cfg.trainer.max_steps if cfg.trainer.max_steps > 0 else 10**6
        stub = argparse.Namespace(
            datamodule=datamodule,
            estimated_stepping_batches=budget,
            gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
            gradient_clip_algorithm=None,
        )
        loop = PLAIN_LOOPS[cfg.model._target_](module, stub, cfg.seed)
        del module
        result = {"before_mib": _status("VmHWM")}
        _reset_peak()
        result["start_mib"] = _status("VmRSS")
        with _as_without_lightning():
            for _ in range(steps):
                loop.step()
        result["peak_mib"] = _status("VmHWM")
        return result


def memory(experiment: str, steps: int, overrides: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for loop in ("plain", "genlab"):
        command = [sys.executable, __file__, "--memory-child", loop, "--families", experiment]
        command += ["--memory-steps", str(steps), *[f"--override={o}" for o in overrides]]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"memory child {loop} {experiment} failed:\n{done.stderr[-3000:]}")
        out[loop] = json.loads(lines[-1])
    return out


# ---------------------------------------------------------------------------------------------------------
# the table


def _spread(values: list[float], digits: int = 1) -> str:
    """median [first quartile - third quartile]"""
    if not values:
        return "-"
    fmt = f"{{:.{digits}f}}".format
    if len(values) < 4:
        return fmt(statistics.median(values))
    low, mid, high = statistics.quantiles(values, n=4)
    return f"{fmt(mid)} [{fmt(low)}-{fmt(high)}]"


def table(results: list[dict[str, Any]], found: dict[str, dict[str, str]]) -> str:
    head = (
        "| experiment | family | plain ms | genlab ms | genlab - plain ms | ratio | ratio (wall) "
        "| periodic steps: ms above a step | peak MiB plain / genlab | weights equal |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        cpu, wall = r["cpu"], r["wall"]
        events = ", ".join(
            f"{what} +{statistics.median(extra):.0f} (x{len(extra)})"
            for what, extra in sorted(cpu["events_extra_ms"].items())
        )
        mem = r.get("memory")
        peak = (
            " / ".join(f"+{m['peak_mib'] - m['start_mib']}" for m in (mem["plain"], mem["genlab"]))
            if mem
            else "-"
        )
        equal = (
            f"yes ({r['steps_compared']} steps)"
            if r["equal"]
            else f"no: {', '.join(r['unequal'])} (max abs diff {r['max_abs_diff']:.2g})"
        )
        lines.append(
            f"| {r['experiment']} | {found[r['experiment']]['family']} | {_spread(cpu['plain_ms'])} "
            f"| {_spread(cpu['genlab_ms'])} | {_spread(cpu['extra_ms'])} | {_spread(cpu['ratio'], 3)} "
            f"| {_spread(wall['ratio'], 3)} | {events or '-'} | {peak} | {equal} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--families", help="comma-separated experiment, model or family names (default: all)")
    parser.add_argument("--steps", type=int, default=1, help="steps per turn of each loop (default 1)")
    parser.add_argument("--repeats", type=int, default=200, help="timed turns of each loop (default 200)")
    parser.add_argument(
        "--chunk", type=int, default=10, help="steps per reported figure, median and range (default 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed steps of each loop first (default 10)"
    )
    parser.add_argument(
        "--override", action="append", default=[], help="a config override, e.g. data.batch_size=64"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--memory-steps", type=int, default=20, help="steps the memory children train")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--memory-child", choices=["plain", "genlab"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.families, args.memory_steps, args.override)))
        return []

    found = experiments(args.families)
    results = []
    for name in found:
        if found[name]["target"] not in PLAIN_LOOPS:
            print(f"{name}: no plain loop for {found[name]['target']}; skipped", file=sys.stderr)
            continue
        start = time.perf_counter()
        result = measure(name, args.warmup, args.steps, args.repeats, args.override, args.chunk)
        if not args.no_memory:
            result["memory"] = memory(name, args.memory_steps, args.override)
        result["seconds"] = time.perf_counter() - start
        print(f"{name}: done in {result['seconds']:.0f} s", file=sys.stderr)
        results.append(result)

    if results:
        per = results[0]["steps_per_figure"]
        print(
            f"\ngenlab train vs a plain PyTorch loop, taking turns of {args.steps} step(s) after {args.warmup} "
            f"warm-up steps, {args.repeats} turns each; one torch thread (torch {torch.__version__}, lightning "
            f"{L.__version__}). CPU ms per step (wall for the ratio in wall time): median [quartiles] of the "
            f"mean step over runs of {per} steps\n"
        )
    print(table(results, found))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
