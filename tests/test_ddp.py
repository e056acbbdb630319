"""DDP under Hydra on CPU (gloo): ranks > 0 re-run the job they belong to, never the sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import run_genlab

DDP_CPU = ["debug=fast", "trainer=ddp_cpu", "trainer.devices=2"]  # debug=fast alone pins one device


def test_multirun_of_ddp_jobs_gives_one_run_dir_per_job_with_matching_ranks(tmp_path: Path):
    sweep, cwd = tmp_path / "sweep", tmp_path / "cwd"
    cwd.mkdir()
    result = run_genlab("train", "-m", *DDP_CPU, "seed=1,2", f"hydra.sweep.dir={sweep}", cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/run.json")}
    assert sorted(records) == ["0", "1"]
    assert [records[job]["status"] for job in ("0", "1")] == ["completed", "completed"]
    assert not any(cwd.iterdir()), "a rank re-ran the sweep and left a stray output folder"

    # every rank of a job trains with that job's overrides: rank 1 seeds what its rank 0 seeded
    log = result.stdout + result.stderr
    seeds = re.findall(r"\[rank: (\d)\] Seed set to (\d+)", log)
    assert ("1", "1") in seeds and ("1", "2") in seeds, seeds
    assert len(re.findall(r"Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2", log)) == 2
