"""Stop training when the loss turns non-finite: the run fails with `non-finite loss at step N`.

Nothing is deleted: the checkpoints written before the divergence stay, the newest good one included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L

from genlab.errors import GenlabError


class NonFiniteLossError(GenlabError):
    """The training loss became NaN or infinite; the run cannot usefully continue."""


class NonFiniteLossGuard(L.Callback):
    """After every training batch, check the loss it returned and the losses it logged under `keys`.

    Manual-optimisation modules (GANs) return nothing, so their logged `train/d_loss` / `train/g_loss` are
    what is checked. Under DDP every rank takes the same decision, so no rank is left waiting in a collective.
    """

    def __init__(self, keys: Sequence[str] = ("train/loss", "train/d_loss", "train/g_loss")):
        self.keys = tuple(keys)
        self._step = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        self._step = trainer.global_step  # the step whose loss this batch computes

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bad = self._non_finite(outputs, trainer.callback_metrics)
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            what = ", ".join(f"{name}={value}" for name, value in bad.items()) or "on another rank"
            raise NonFiniteLossError(
                f"non-finite loss at step {self._step} ({what}); checkpoints written before it are kept: "
                "lower optimizer.lr, set trainer.gradient_clip_val, or use trainer.precision=32-true"
            )

    def _non_finite(self, outputs: Any, logged: dict[str, Any]) -> dict[str, float]:
        values: dict[str, Any] = {}
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            values["train/loss"] = loss
        values.update({key: logged[key] for key in self.keys if key in logged and key not in values})
        bad = {}
        for name, value in values.items():
            number = float(value.detach()) if hasattr(value, "detach") else float(value)
            if not math.isfinite(number):
                bad[name] = number
        return bad
