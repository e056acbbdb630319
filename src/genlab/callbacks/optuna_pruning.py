"""Report the objective to the run's Optuna trial after each validation, and stop the run when it is pruned.

Added by genlab's Optuna sweeper (`hydra.sweeper.pruner`) to each trial as `callbacks.optuna_pruning`; the
sweeper reads `pruned_at_step` from the trial afterwards and records it as PRUNED. `pruned_at_step` is kept
on the callback too (on every rank), so `genlab train` records the run as `pruned` in run.json.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class OptunaPruning(Callback):
    def __init__(self, storage: str, study_name: str, trial_id: int, monitor: str, pruner: Any) -> None:
        self.storage = storage  # the sweep's study: a database every trial's process can reach
        self.study_name = study_name
        self.trial_id = trial_id  # storage-wide id of the trial this run is (not its number in the study)
        self.monitor = monitor  # the objective metric, e.g. val/loss
        self.pruner = pruner  # an optuna pruner, built from the sweeper's `pruner` config
        self._trial: Any = None
        self.pruned_at_step: int | None = None  # set when the pruner stops the run

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and self.monitor in trainer.callback_metrics:
            trial = self._get_trial()
            trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.global_step)
            prune = trial.should_prune()
            if prune:
                trial.set_user_attr("pruned_at_step", trainer.global_step)
        # every rank stops together, or DDP would wait forever for the pruned rank 0
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
            self.pruned_at_step = trainer.global_step

    def _get_trial(self) -> Any:
        if self._trial is None:
            import optuna

            from genlab.study_storage import open_storage

            study = optuna.load_study(
                study_name=self.study_name, storage=open_storage(self.storage), pruner=self.pruner
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial
