"""The classifier family: trains a labelled-image CNN with cross-entropy, for use as an offline feature extractor.

It is not a generative model; genlab trains it so image metrics (FID, KID, IS, precision/recall) can run
offline on small domains with features that know the domain (see `genlab.metrics.extractors`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from genlab.models.base import GenerativeModule, OptimizerFactory, SchedulerFactory


class Classifier(GenerativeModule):
    """Cross-entropy training of a net with `features(x)` / `forward(x) -> logits` and a `config` dict.

    The checkpoint stores the net's `config` under `net_config`, so the feature extractor rebuilds the
    net from the checkpoint alone (loaded with `weights_only=True`).
    """

    metric_modes = {"val/acc": "max", "test/acc": "max"}

    def __init__(
        self,
        net: nn.Module,
        label_smoothing: float = 0.0,
        max_shift: int = 0,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ):
        """
        Args:
            net: the classifier network (e.g. `genlab.nets.classifier.ConvClassifier`).
            label_smoothing: cross-entropy label smoothing; 0 is plain cross-entropy.
            max_shift: training images are shifted by up to this many pixels each way (0: no augmentation);
                with a few thousand images this is what lifts test accuracy past overfitting.
            optimizer, scheduler: `_partial_` factories from conf/optimizer and conf/scheduler.
        """
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.label_smoothing = label_smoothing
        self.max_shift = int(max_shift)
        self.val_acc = MulticlassAccuracy(num_classes=net.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=net.num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(self.shift(x)), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def shift(self, x: Tensor) -> Tensor:
        """Each image moved by a random whole number of pixels in [-max_shift, max_shift], edges repeated."""
        if self.max_shift == 0:
            return x
        b, _, h, w = x.shape
        pixels = torch.randint(-self.max_shift, self.max_shift + 1, (b, 2), device=x.device).to(x.dtype)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = -pixels[:, 0] * 2 / w  # grid coordinates span 2 over the image width
        theta[:, 1, 2] = -pixels[:, 1] * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True, batch_size=len(y), sync_dist=True)
        self.val_acc(logits, y)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("test/loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)
        self.test_acc(logits, y)
        self.log("test/acc", self.test_acc)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["net_config"] = dict(self.net.config)
        # which data the features were learnt on: metric names carry it (`fid/classifier-mnist5k/5000`)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        checkpoint["trained_on"] = getattr(datamodule, "dataset", None)
