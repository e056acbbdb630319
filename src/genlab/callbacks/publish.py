"""Copy a run's best checkpoint to a fixed path at the end of training, so other runs find it there.

`genlab train experiment=mnist_classifier` uses it to put the FID feature extractor at
`${paths.cache_dir}/classifiers/<dataset>.ckpt`, the path `callbacks=fid` reads by default.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import lightning as L

from genlab.atomic import atomic_write

log = logging.getLogger(__name__)


class PublishCheckpoint(L.Callback):
    """At the end of fit, copy the checkpoint callback's best checkpoint to `path` (atomically, rank 0).

    Gated on a final metric, so a short debug run (`debug=fast`) never replaces a trained checkpoint.
    """

    def __init__(self, path: str, monitor: str | None = None, min_value: float | None = None):
        """
        Args:
            path: where the checkpoint goes; an older file there is replaced in one step (temp file + rename),
                so a reader sees the old or the new checkpoint, never half of one.
            monitor: a metric read when training ends (e.g. `val/acc`); with `min_value`, the gate.
            min_value: publish only if `monitor` is at least this.
        """
        super().__init__()
        self.path = Path(path).expanduser()
        self.monitor = monitor
        self.min_value = min_value

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.interrupted:
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        if not best or not Path(best).is_file():
            log.warning(f"checkpoint not published to {self.path}: the run saved no best checkpoint")
            return
        if self.monitor is not None and self.min_value is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None or float(value) < self.min_value:
                shown = "not logged" if value is None else f"{float(value):.4g}"
                log.warning(
                    f"checkpoint not published to {self.path}: {self.monitor}={shown}, "
                    f"below the {self.min_value} it needs"
                )
                return
        # a temp file renamed over the old one: a reader (another run's FID) never sees half a checkpoint
        with atomic_write(self.path) as out, open(best, "rb") as source:
            shutil.copyfileobj(source, out)
        log.info(f"best checkpoint {best} published to {self.path}")
