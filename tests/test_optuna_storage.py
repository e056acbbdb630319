"""Where a sweep's study lives: a PostgreSQL server (a real one, started here) or an Optuna journal file, shared by
several sweep processes that must not close each other's running trials."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from genlab.errors import ConfigError
from genlab.study_storage import describe, open_storage
from hydra_plugins.genlab_optuna_sweeper.sweeper import (
    INTERRUPTED,
    OWNER,
    GenlabOptunaSweeper,
    _close_interrupted,
)
from tests.conftest import run_genlab

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_journal_url_opens_one_study_for_every_process(tmp_path: Path):
    url = f"journal:///{tmp_path}/sub/optuna.log"  # an absolute path: journal:////tmp/...
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), 0.25)
    assert (tmp_path / "sub" / "optuna.log").stat().st_size > 0

    # another process (a trial's pruning callback, a second sweep) reads the same study from the same URL
    code = (
        "import optuna; from genlab.study_storage import open_storage; "
        f"s = optuna.load_study(study_name='s', storage=open_storage({url!r})); print(s.best_value)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.strip() == "0.25"

    assert open_storage(None) is None
    assert open_storage("sqlite:///x.db") == "sqlite:///x.db"  # Optuna's own URLs go through as they are
    with pytest.raises(ConfigError, match=r"journal:///<path>"):
        open_storage("journal://relative.log")


def test_a_trials_pruning_callback_reports_to_a_journal_study(tmp_path: Path):
    import torch

    from genlab.callbacks.optuna_pruning import OptunaPruning

    url = f"journal:///{tmp_path}/optuna.log"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    trial = study.ask({"x": FloatDistribution(0, 1)})
    pruner = optuna.pruners.ThresholdPruner(upper=1.0)
    callback = OptunaPruning(
        url, "s", trial._trial_id, "val/loss", pruner
    )  # what the sweeper's override builds
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, global_step=3, should_stop=False,
        callback_metrics={"val/loss": torch.tensor(2.0)}, strategy=SimpleNamespace(broadcast=lambda x, src: x),
    )  # fmt: skip
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop and callback.pruned_at_step == 3
    frozen = optuna.load_study(study_name="s", storage=open_storage(url)).trials[0]
    assert frozen.intermediate_values == {3: 2.0} and frozen.user_attrs["pruned_at_step"] == 3


def test_a_storage_the_sweeper_cannot_open_is_one_line(tmp_path: Path):
    from hydra.errors import CompactHydraException  # Hydra prints these as their message alone

    sweeper = GenlabOptunaSweeper(1, 1, "min", "s", "journal://optuna.log", None, {})
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweeper.launcher = _Launcher()
    with pytest.raises(CompactHydraException) as raised:
        sweeper.sweep(["x=interval(-1, 1)"])
    assert str(raised.value) == (
        "error: hydra.sweeper.storage=journal://optuna.log: a journal file is written journal:///<path> "
        "(journal:////abs/path/optuna.log for an absolute path)"
    )
    assert sweeper.launcher.launched == []


def test_log_lines_hide_the_password_of_a_database_url():
    assert (
        describe("postgresql://me:s3cr3t@db.example:5432/optuna")
        == "postgresql://me:***@db.example:5432/optuna"
    )
    assert describe("postgresql://me@db:5432/optuna") == "postgresql://me@db:5432/optuna"
    assert describe("sqlite:////a/b:c/optuna.db") == "sqlite:////a/b:c/optuna.db"
    assert describe(None) == "memory"


class _Launcher:
    """Runs each job at once: the objective is x squared; records the overrides it was given."""

    def __init__(self) -> None:
        self.launched: list[tuple[str, ...]] = []

    def launch(self, overrides: list[tuple[str, ...]], initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for job in overrides:
            self.launched.append(job)
            x = float(next(o for o in job if o.startswith("x=")).split("=", 1)[1])
            returns.append(JobReturn(overrides=list(job), status=JobStatus.COMPLETED, _return_value=x * x))
        return returns


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweeps_sharing_a_journal_leave_each_others_trials_running_and_count_them(tmp_path: Path):
    url = f"journal:///{tmp_path}/optuna.log"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    space = {"x": FloatDistribution(-1, 1)}
    here = socket.gethostname()
    owners = {
        "live": f"{here}:{os.getpid()}",  # a sweep process of this machine that is still running
        "remote": "another-node:12",  # a sweep process on another machine: nothing here can tell
        "dead": f"{here}:{_dead_pid()}",  # killed: its trial is closed as interrupted
    }
    for owner in owners.values():
        study.ask(space).set_user_attr(OWNER, owner)

    sweeper = GenlabOptunaSweeper(5, 2, "min", "s", url, {"_target_": "optuna.samplers.RandomSampler"}, {})
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.launcher = _Launcher()
    sweeper.sweep(["x=interval(-1, 1)"])

    trials = optuna.load_study(study_name="s", storage=open_storage(url)).trials
    live, remote, dead, *new = trials
    assert live.state == remote.state == TrialState.RUNNING  # the other sweeps' trials are theirs to tell
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == INTERRUPTED
    # n_trials=5 is the study's budget: 2 running elsewhere, so this sweep ran 3 (the dead one does not count)
    assert len(new) == 3 == len(sweeper.launcher.launched)
    for trial in new:
        assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(trial.params["x"] ** 2)
        assert trial.user_attrs[OWNER] == f"{here}:{os.getpid()}"
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.trials == {"RUNNING": 2, "FAIL": 1, "COMPLETE": 3}
    assert results.best_value == min(t.value for t in new)


def test_a_trial_without_owner_left_running_is_closed(tmp_path: Path):
    """Trials of sweeps from before owners were recorded behave as they did: closed as interrupted."""
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:///{tmp_path}/j.log"))
    study.ask()
    _close_interrupted(study, tmp_path)
    assert study.trials[0].state == TrialState.FAIL


# ---- a real PostgreSQL server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """A PostgreSQL server of its own in a temp dir on a free port (initdb + pg_ctl), stopped afterwards."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not on PATH (e.g. apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'genlab[postgres]'")
    # in /tmp itself: pytest's own temp folders are private to root, where the server's user could not enter
    root = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    run_as: dict = {}
    if os.geteuid() == 0:  # initdb refuses to run as root: the server runs as an unprivileged user
        import pwd

        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            pytest.skip("running as root and there is no postgres or nobody user to run the server as")
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        root.chmod(0o755)
        os.chown(root, uid, gid)
        run_as = {"user": uid, "group": gid, "extra_groups": []}
    data, port = root / "data", _free_port()
    env = {**os.environ, "LC_ALL": "C"}

    def pg(*args: str) -> None:
        result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, **run_as)
        assert result.returncode == 0, f"{args[0]} failed: {result.stderr[-2000:]}"

    pg(initdb, "-D", str(data), "-U", "genlab", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60", "start")
    try:
        yield f"postgresql+psycopg://genlab@127.0.0.1:{port}/postgres"
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_sweeper_keeps_its_study_on_a_postgresql_server(postgres_url: str, tmp_path: Path):
    """The sweeper's side, without training: two sweep processes' worth of trials in one server study."""
    sweeper = GenlabOptunaSweeper(
        3, 2, "min", "pg", postgres_url, {"_target_": "optuna.samplers.RandomSampler"}, {}
    )
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.launcher = _Launcher()
    sweeper.sweep(["x=interval(-1, 1)"])
    sweeper.n_trials = 4  # the same command again, with a larger budget: resumes the study on the server
    sweeper.sweep(["x=interval(-1, 1)"])

    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert (
        [t.state for t in study.trials] == [TrialState.COMPLETE] * 4 == [t.state for t in study.get_trials()]
    )
    assert [t.value for t in study.trials] == pytest.approx([t.params["x"] ** 2 for t in study.trials])
    assert len(sweeper.launcher.launched) == 4


@pytest.mark.slow  # two real trainings (~75 s on 2 busy cores); the test above covers the server in the default suite
def test_sweep_keeps_its_study_on_a_postgresql_server(postgres_url: str, tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    result = run_genlab(
        "train", "-m", "hparams_search=mnist_vae_optuna", "debug=fast", "threads=1",
        "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={postgres_url}", f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (sweep_dir / "optuna.db").exists()  # nothing went to the default SQLite file

    study = optuna.load_study(study_name="mnist_vae", storage=postgres_url)  # read back from the server
    assert [t.number for t in study.trials] == [0, 1]
    for trial in study.trials:
        record = json.loads((sweep_dir / str(trial.number) / "run.json").read_text())
        assert trial.state == TrialState.COMPLETE and record["status"] == "completed"
        assert trial.value == record["metrics"]["val/loss"]  # what the job reported is what its run recorded
        assert trial.user_attrs["output_dir"] == str(sweep_dir / str(trial.number))
        assert f"model.net.latent_dim={trial.params['model.net.latent_dim']}" in record["overrides"]
    assert study.best_value == min(t.value for t in study.trials)
