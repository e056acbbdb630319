"""Sample grids during training: PNGs under `<run dir>/samples/`, also sent to TensorBoard / W&B.

Works for any module implementing the ImageGenerator protocol; modules with `reconstruct(x)` (VAEs)
also get a grid of real validation images above their reconstructions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from genlab.models.base import ImageGenerator


class SampleGrid(L.Callback):
    """Every `every_n_epochs` validation epochs, save and log a grid of `n` samples (and reconstructions).

    The latents come from a generator seeded with `seed` each time, so grids of successive epochs show
    the same draws and can be compared; the global RNG is left untouched, so runs stay reproducible.
    """

    def __init__(self, n: int = 64, every_n_epochs: int = 1, seed: int = 0, nrow: int | None = None):
        """
        Args:
            n: images per grid.
            every_n_epochs: draw a grid after the validation of every n-th epoch.
            seed: seed of the generator the latents are drawn from.
            nrow: images per grid row; default the square root of `n`, rounded up.
        """
        super().__init__()
        self.n = n
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.nrow = nrow or math.ceil(math.sqrt(n))
        # the epoch's first n // 2 validation images, for the reconstruction grid
        self._real: list[Tensor] = []
        self._labels: list[Tensor] = []  # their labels: a conditional model reconstructs with them

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._real, self._labels = [], []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        wanted = self.n // 2 - sum(len(x) for x in self._real)
        if wanted > 0 and dataloader_idx == 0 and hasattr(pl_module, "reconstruct"):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            self._real.append(images[:wanted].detach())
            if isinstance(batch, (tuple, list)) and len(batch) > 1:
                self._labels.append(batch[1][:wanted].detach())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not isinstance(pl_module, ImageGenerator):
            return
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        # Every rank samples (identical draws, cheap) but only rank 0 writes: with a sharded strategy the
        # forward pass is collective, so sampling on rank 0 alone would hang.
        generator = torch.Generator().manual_seed(self.seed)
        extra = {}
        if getattr(pl_module, "num_classes", None):  # a conditional model: row r shows class r (mod classes)
            rows = torch.arange(self.n, device=pl_module.device) // self.nrow
            extra["labels"] = rows % pl_module.num_classes
        samples = pl_module.sample(self.n, generator=generator, **extra).float().clamp(0, 1).cpu()
        recon_grid = self._recon_grid(pl_module)
        self._real, self._labels = [], []
        if not trainer.is_global_zero:
            return

        out_dir = Path(trainer.default_root_dir) / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        grid = make_grid(samples, nrow=self.nrow, padding=2)  # (C, H', W') in [0, 1]
        save_image(grid, out_dir / f"epoch_{epoch:03d}.png")
        save_image(grid, out_dir / "last.png")
        self._log(trainer, "samples", grid)
        if recon_grid is not None:
            save_image(recon_grid, out_dir / f"recon_epoch_{epoch:03d}.png")
            self._log(trainer, "reconstructions", recon_grid)

    def _recon_grid(self, pl_module: L.LightningModule) -> Tensor | None:
        """Real validation images (top rows) above their reconstructions (bottom rows), or None."""
        if not self._real:
            return None
        real = torch.cat(self._real)
        # whole rows of each, so the real half and the reconstructed half line up column by column
        nrow = min(self.nrow, len(real))
        real = real[: len(real) // nrow * nrow]
        extra = {}
        if getattr(pl_module, "num_classes", None):
            if len(self._labels) != len(self._real):
                return None  # unlabelled batches: a conditional model cannot reconstruct them
            extra["labels"] = torch.cat(self._labels)[: len(real)]
        recon = pl_module.reconstruct(real, **extra).float().clamp(0, 1).cpu()
        real01 = ((real.float().cpu() + 1) / 2).clamp(0, 1)  # datamodules give [-1, 1]
        return make_grid(torch.cat([real01, recon]), nrow=nrow, padding=2)

    @staticmethod
    def _log(trainer: L.Trainer, tag: str, grid: Tensor) -> None:
        """Send the grid to the image-capable loggers; CSV and others get nothing."""
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, grid, global_step=trainer.global_step)
            elif isinstance(logger, WandbLogger):  # the class is importable without wandb installed
                logger.log_image(key=tag, images=[grid], step=trainer.global_step)
