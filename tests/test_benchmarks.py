"""The benchmark scripts run end to end, and their plain loops do the same work as `genlab train`.

benchmarks/overhead.py times `genlab train` against a plain PyTorch loop; its proof that both loops train the
same thing is that every weight is `torch.equal` after the same steps. These run it with tiny settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def benchmark(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_overhead_runs_and_both_loops_end_with_equal_weights(tmp_path: Path):
    out = tmp_path / "overhead.json"
    args = ["--families", "vae", "--steps", "3", "--repeats", "1", "--warmup", "1", "--no-memory"]
    done = benchmark("overhead.py", *args, "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["experiment"] == "mnist_vae"
    assert result["equal"], f"weights differ after {result['steps_compared']} steps: {result['unequal']}"
    assert result["steps_compared"] == 1 + 3 + 1  # warm-up, one timed block, the step that closes it
    assert len(result["cpu"]["genlab_ms"]) == len(result["cpu"]["plain_ms"]) == 1
    assert "| mnist_vae | VAE |" in done.stdout and "yes (5 steps)" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gan", "ddpm", "gpt", "classifier"])
def test_every_plain_loop_matches_genlab_bitwise(family: str, tmp_path: Path):
    out = tmp_path / "overhead.json"
    args = ["--families", family, "--steps", "2", "--repeats", "2", "--warmup", "1", "--memory-steps", "2"]
    done = benchmark("overhead.py", *args, "--json", str(out), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["equal"], result["unequal"]
    assert set(result["memory"]) == {"plain", "genlab"}
