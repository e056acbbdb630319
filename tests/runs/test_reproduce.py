"""`genlab reproduce`: a deterministic CPU run comes back bitwise, from its stored config; unfinished runs are
refused with one line; differing code or package versions are warned about; the table flags drift."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from genlab.runs import reproduce
from genlab.runs.record import git_state, package_versions
from tests.conftest import finished_run as train_run
from tests.conftest import run_genlab


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("original") / "run", "debug=fast", "trainer.deterministic=true")


def test_deterministic_cpu_run_reproduces_bitwise_from_its_stored_config(finished_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    record["versions"]["torch"] = "0.0.1"  # doctored: reproduce must say so, and still run
    (run_dir / "run.json").write_text(json.dumps(record))
    # Tags change nothing numeric; if the reproduction picks them up, it read the stored config, not conf/
    stored = run_dir / ".hydra" / "config.yaml"
    stored.write_text(stored.read_text().replace("tags:\n- mnist5k\n- vae\n", "tags:\n- stored-only\n"))

    result = run_genlab("reproduce", str(run_dir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("torch" in line and "0.0.1" in line for line in warnings), warnings
    new_dirs = list((run_dir / "reproduce").iterdir())
    assert len(new_dirs) == 1
    new = json.loads((new_dirs[0] / "run.json").read_text())
    assert new["status"] == "completed"
    assert new["reproduces"] == str(run_dir.resolve())
    assert new["tags"] == ["stored-only"]
    assert new["overrides"] == record["overrides"]
    assert new["metrics"] == record["metrics"]  # bitwise: float equality of every final metric
    assert "val/loss" in new["metrics"] and "test/loss" in new["metrics"]

    table = result.stdout[result.stdout.index("metric ") :].splitlines()
    rows = {
        line.split()[0]: line.split() for line in table[2:] if line and line.split()[0] in record["metrics"]
    }
    assert set(rows) == set(record["metrics"])
    assert all(row[-3:] == ["0", "bitwise", "ok"] for row in rows.values()), table
    assert f"all {len(record['metrics'])} metrics match (bitwise)" in result.stdout


@pytest.mark.parametrize("status", ["failed", "running", "interrupted"])
def test_unfinished_runs_are_refused_with_one_line(tmp_path: Path, capsys, status: str):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run_dir / "run.json").write_text(json.dumps({"status": status, "metrics": {"val/loss": 1.0}}))
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(run_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and f"a {status} run" in err[0], err
    assert not (run_dir / "reproduce").exists()


def test_a_folder_without_run_json_is_refused(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main([str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no run.json" in err[0], err


def test_warnings_name_each_differing_version_and_commit():
    here = {"git": git_state(), "versions": package_versions()}
    assert not [w for w in reproduce.provenance_warnings(here) if "differs" in w]

    doctored = {
        "git": {"commit": "0" * 40, "dirty": False},
        "versions": {**package_versions(), "torch": "0.0.1", "lightning": "0.0.2"},
    }
    warnings = reproduce.provenance_warnings(doctored)
    assert sum("version differs" in w for w in warnings) == 2
    assert any(w.startswith("torch version differs") and "0.0.1" in w for w in warnings)
    if git_state()["commit"]:
        assert any(w.startswith("git commit differs: the run used 000000000000") for w in warnings)


def test_metric_checks_bitwise_tolerance_missing_and_nan():
    checks = reproduce.compare_metrics(
        {"a": 1.0, "b": 100.0, "c": 2.0, "d": math.nan}, {"a": 1.0, "b": 100.5, "d": math.nan, "e": 3.0}, 0.0
    )
    assert [(c.metric, c.ok) for c in checks] == [
        ("a", True),
        ("b", False),
        ("c", False),
        ("d", True),
        ("e", True),
    ]
    timed = {"fid/classifier-mnist5k/1000": 31.3, "fidelity_seconds/classifier-mnist5k/1000": 5.2}
    again = {**timed, "fidelity_seconds/classifier-mnist5k/1000": 6.9}  # the same result, another duration
    assert [c.metric for c in reproduce.compare_metrics(timed, again, 0.0)] == ["fid/classifier-mnist5k/1000"]
    loose = reproduce.compare_metrics({"b": 100.0}, {"b": 100.5}, 1e-2)
    assert loose[0].ok and loose[0].diff == 0.5
    text = reproduce.table(checks)
    assert text.splitlines()[0].split() == ["metric", "original", "reproduced", "|diff|", "tolerance", "ok"]
    assert "FAIL" in text and "missing" in text and "new" in text


def test_default_tolerance_is_bitwise_only_for_deterministic_cpu_runs(tmp_path: Path):
    from genlab.runs.rundirs import load_run

    def run_with(trainer: str, gpus: list[str]) -> object:
        (tmp_path / ".hydra").mkdir(exist_ok=True)
        (tmp_path / ".hydra" / "config.yaml").write_text(f"trainer:\n{trainer}")
        (tmp_path / "run.json").write_text(
            json.dumps({"status": "completed", "hardware": {"cuda_devices": gpus}})
        )
        return load_run(tmp_path)

    assert reproduce.default_tolerance(run_with("  accelerator: cpu\n  deterministic: true\n", ["H100"])) == 0
    assert reproduce.default_tolerance(run_with("  accelerator: auto\n  deterministic: true\n", [])) == 0
    assert reproduce.default_tolerance(run_with("  accelerator: auto\n  deterministic: true\n", ["H100"])) > 0
    assert reproduce.default_tolerance(run_with("  accelerator: cpu\n  deterministic: false\n", [])) > 0
