"""Validate once more when training stops by `trainer.max_steps` in the middle of an epoch.

Lightning validates at the end of each epoch (or every `val_check_interval` batches), so a run cut short
(`trainer.max_steps=20`, a smoke sweep) would end with no `val/loss`, no best checkpoint and no objective.
Setting `trainer.should_stop` at the last step makes Lightning run its validation after that step, as it
does for early stopping; a run whose last step ends an epoch validates once, as before.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class ValidateAtEnd(L.Callback):
    """`genlab train` always adds it."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and trainer.enable_validation:
            trainer.should_stop = True
