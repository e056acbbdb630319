"""run.json: atomic writes, status transitions and provenance fields."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from genlab.runs.record import RunRecord, write_json_atomic


def test_record_lifecycle(tmp_path: Path):
    record = RunRecord.start(tmp_path, experiment="mnist_vae", seed=3, overrides=["seed=3"], tags=["a"])
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["status"] == "running" and data["seed"] == 3 and data["overrides"] == ["seed=3"]
    assert data["command"] == "genlab train seed=3"
    assert set(data["git"]) == {"commit", "dirty"}
    assert data["versions"]["python"]

    record.finish("completed", metrics={"val/loss": 1.5}, steps=10)
    data = RunRecord.load(tmp_path).data
    assert data["status"] == "completed" and data["metrics"] == {"val/loss": 1.5} and data["steps"] == 10
    assert data["finished"] is not None and data["wall_time_s"] >= 0


def test_unknown_status_is_refused(tmp_path: Path):
    record = RunRecord.start(tmp_path, experiment="x", seed=0, overrides=[])
    with pytest.raises(ValueError, match="unknown run status"):
        record.finish("done")


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path: Path):
    path = tmp_path / "run.json"
    write_json_atomic(path, {"status": "completed"})

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"status": "running", "bad": Boom()})
    assert json.loads(path.read_text()) == {"status": "completed"}
    assert os.listdir(tmp_path) == ["run.json"]  # no temp file left behind
