"""`GenlabOptunaSweeper`: ask Optuna for a batch of trials, launch them as Hydra jobs, tell it each result.

The study lives in SQLite storage in the sweep dir by default: re-running the same command resumes it, and
trials that already finished count toward `n_trials`. A job that raised, or returned NaN/None, is told as FAIL
with its reason in the trial's `fail_reason` attribute; the sweep goes on. With a storage that many machines
reach (`postgresql://...`, or a `journal:///` file on a shared filesystem, see genlab.study_storage), several
sweep processes can work on one study: `n_trials` counts the trials all of them started, and a trial left
running is closed as interrupted only when the process that asked for it is gone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError
from genlab.study_storage import describe, open_storage

from .search_space import parse_search_space, to_override

log = logging.getLogger(__name__)

_DIRECTIONS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
# set on trials left RUNNING by an interrupted sweep: they are closed as FAIL and do not count toward n_trials
INTERRUPTED = "interrupted: the sweep stopped before this trial reported"
# user attribute of each trial: "host:pid" of the sweep process that asked for it
OWNER = "sweeper"


class SweepConfigError(ConfigError, CompactHydraException):
    """A sweeper setting that cannot work: Hydra prints the message alone, without a traceback."""


class GenlabOptunaSweeper(Sweeper):
    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        direction: str,
        study_name: str,
        storage: str | None,
        sampler: Any,
        params: Any,
        pruner: Any = None,
    ) -> None:
        if direction not in _DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={direction!r}: use min or max (or set objective.mode)")
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.direction = _DIRECTIONS[direction]
        self.study_name = study_name
        self.storage = storage
        self.sampler_config = sampler
        self.pruner_config = pruner
        self.params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else params
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        space, fixed = parse_search_space(self.params or {}, arguments)
        pruner = _build(self.pruner_config)
        if pruner is not None and self.storage is None:
            raise ValueError("hydra.sweeper.pruner needs hydra.sweeper.storage: the trials report to it")
        try:  # the sampler is replaced below, once the study's size is known
            study = optuna.create_study(
                study_name=self.study_name,
                storage=open_storage(self.storage),
                sampler=optuna.samplers.RandomSampler(seed=0),
                pruner=pruner or optuna.pruners.NopPruner(),  # optuna's default would be a MedianPruner
                direction=self.direction,
                load_if_exists=True,
            )
        except ConfigError as error:  # a malformed journal:/// URL
            raise SweepConfigError(f"error: {error}") from None
        except ImportError as error:  # no driver for the database the URL names
            raise SweepConfigError(
                f"error: hydra.sweeper.storage={describe(self.storage)}: {error} (PostgreSQL: pip install "
                "'genlab[postgres]' and a postgresql+psycopg:// URL)"
            ) from None
        # a seeded sampler built afresh for a resumed study would ask its first points again: shift its seed
        # by the trials the study already holds (a fresh study: the seed as given)
        study.sampler = _build(self.sampler_config, seed_offset=len(study.get_trials(deepcopy=False)))
        if study.direction.name.lower() != self.direction:
            raise ValueError(
                f"study {self.study_name!r} in {describe(self.storage)} was made to {study.direction.name.lower()}, not "
                f"{self.direction}: set objective.mode to match, or use another hydra.sweep.dir"
            )
        _close_interrupted(study, sweep_dir)
        done, elsewhere = _finished(study), _running(study)
        log.info(
            f"Optuna study {self.study_name!r} ({self.direction}) in {describe(self.storage)}: "
            f"{done} of {self.n_trials} trials already finished"
            + (f", {elsewhere} running in other sweep processes" if elsewhere else "")
            + f"; searching {sorted(space)}"
        )
        # trials other processes are running count too: n_trials is the study's budget, however many share it
        while (started := _finished(study) + _running(study)) < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - started))]
            for trial in trials:
                trial.set_user_attr(OWNER, _owner())
            overrides = [
                tuple(
                    fixed
                    + [to_override(key, trial.params[key]) for key in space]
                    + self._pruning_overrides(trial, pruner)
                )
                for trial in trials
            ]
            # the job's number is its trial's: resumed sweeps add folders instead of overwriting earlier ones
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, returns):
                _tell(study, trial, job)

        return _write_results(study, sweep_dir)

    def _pruning_overrides(self, trial: Any, pruner: Any) -> list[str]:
        """The callback through which a trial's run reports to its study (only with a pruner)."""
        if pruner is None:
            return []
        assert self.config is not None
        fields = {
            "_target_": "genlab.callbacks.optuna_pruning.OptunaPruning",
            "storage": self.storage,
            "study_name": self.study_name,
            "trial_id": trial._trial_id,
            "monitor": self.config.objective.metric,
            # the pruner itself is not in the storage: the run builds its own from the same config
            "pruner": OmegaConf.to_container(self.config.hydra.sweeper.pruner, resolve=True),
        }
        return [f"+callbacks.optuna_pruning={_flow(fields)}"]


def _flow(value: Any) -> str:
    """A plain value in Hydra's override syntax (`{key:value,...}`, `[...]`, quoted strings)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_flow(item) for item in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tell(study: Any, trial: Any, job: JobReturn) -> None:
    from optuna.trial import TrialState

    output_dir = _output_dir(job)
    if output_dir:
        trial.set_user_attr("output_dir", output_dir)
    reason = None
    try:
        value = job.return_value
    except Exception as error:  # the job raised: Hydra hands its exception back here
        value, reason = None, f"{type(error).__name__}: {error}"
    if reason is None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
        reason = f"objective was {value!r}" + _run_error(output_dir)
    pruned_at = _pruned_at(study, trial)
    if pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        log.info(f"trial {trial.number} pruned at step {pruned_at}")
    elif reason is not None:
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        log.warning(f"trial {trial.number} failed ({reason}); the sweep goes on")
    else:
        study.tell(trial, float(value))
        log.info(f"trial {trial.number}: {float(value):.6g} with {trial.params}")


def _pruned_at(study: Any, trial: Any) -> int | None:
    """The step at which the run's pruning callback stopped it (it wrote this into the storage)."""
    frozen = study._storage.get_trial(trial._trial_id)
    return frozen.user_attrs.get("pruned_at_step")


def _output_dir(job: JobReturn) -> str | None:
    try:
        return str(job.hydra_cfg.hydra.runtime.output_dir)
    except Exception:
        return None


def _run_error(output_dir: str | None) -> str:
    """The error genlab wrote into the job's run.json, if any (a job that returned NaN said why there)."""
    if not output_dir or not (Path(output_dir) / "run.json").is_file():
        return ""
    try:
        error = json.loads((Path(output_dir) / "run.json").read_text()).get("error")
    except (OSError, ValueError):
        return ""
    return f" ({error})" if error else ""


def _build(node: Any, seed_offset: int = 0) -> Any:
    """A sampler or pruner from its `_target_` config (or as given, if already built)."""
    from hydra.utils import instantiate

    if not (isinstance(node, dict) or OmegaConf.is_config(node)):
        return node
    seed = node.get("seed")
    if seed_offset and isinstance(seed, int):
        return instantiate(node, seed=seed + seed_offset)
    return instantiate(node)


def _close_interrupted(study: Any, sweep_dir: Path) -> None:
    """Trials an interrupted sweep left RUNNING: failed in the study, `interrupted` in their run.json."""
    from optuna.trial import Trial, TrialState

    from genlab.runs.record import RunRecord

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _owner_alive(frozen.user_attrs.get(OWNER)):
            continue  # another sweep process (on this machine or another) is running it
        Trial(study, frozen._trial_id).set_user_attr("fail_reason", INTERRUPTED)
        study.tell(frozen.number, state=TrialState.FAIL)
        log.warning(f"trial {frozen.number} was left running by an interrupted sweep: closed as failed")
        run_dir = sweep_dir / str(frozen.number)  # hydra.sweep.subdir: the job number is the trial's
        if (run_dir / "run.json").is_file():
            record = RunRecord.load(run_dir)
            if record.data.get("status") == "running":
                record.update(status="interrupted", error="the sweep was stopped during this trial")


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the sweep process that asked for a trial may still be running it: on another machine it is
    taken to be (nothing here can tell); on this one, while its process exists. No owner: an older sweep."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True  # a process of another user; or an owner this code did not write
    return True


def _running(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(
        1
        for trial in study.get_trials(deepcopy=False, states=states)
        if trial.user_attrs.get("fail_reason") != INTERRUPTED
    )


def _write_results(study: Any, sweep_dir: Path) -> dict[str, Any] | None:
    """`optimization_results.yaml` in the sweep dir: the best trial, and how many trials ended in each state."""
    from collections import Counter

    counts = Counter(trial.state.name for trial in study.get_trials(deepcopy=False))
    completed = counts.get("COMPLETE", 0)
    results: dict[str, Any] = {"direction": study.direction.name.lower(), "trials": dict(counts)}
    if completed:
        best = study.best_trial
        results.update(
            best_trial=best.number,
            best_value=best.value,
            best_params=best.params,
            best_output_dir=best.user_attrs.get("output_dir"),
        )
        log.info(f"best trial {best.number}: {best.value:.6g} with {best.params}")
    else:
        log.warning("no trial completed")
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    return results
