"""`genlab reproduce RUN_DIR`: re-run a finished run from its stored config in a new run dir, then check that
its final metrics match the original's (bitwise for a deterministic CPU run, else within a relative tolerance).

The stored `.hydra/config.yaml` (already composed, interpolations kept) becomes the primary config of a
`genlab train` child process, so today's conf/ defaults cannot leak in; only Hydra's own settings (logging, the
run dir) come from the packaged `hydra/default.yaml`. The original run dir is only read, except that the new run
goes under `RUN_DIR/reproduce/<time>` by default: inside a run dir, so `genlab compare` on a sweep folder does not
mistake reproductions for more jobs of the sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.errors import DataError, GenlabError
from genlab.runs.record import RECORD_NAME, git_state, package_versions, write_json_atomic
from genlab.runs.rundirs import CONFIG_PATH, MISSING, Run, load_run

CONFIG_NAME = "genlab_reproduced_run"  # the primary config written into a temp dir; unlike any name in conf/
# relative; a non-deterministic run (GPU kernels, atomics) drifts by about this much over a short training
NONDETERMINISTIC_TOLERANCE = 1e-2


@dataclass
class Check:
    """One metric of the comparison table."""

    metric: str
    original: float | None
    reproduced: float | None
    tolerance: float

    @property
    def diff(self) -> float | None:
        if self.original is None or self.reproduced is None:
            return None
        return abs(self.reproduced - self.original)

    @property
    def ok(self) -> bool:
        a, b = self.original, self.reproduced
        if a is None:
            return True  # a metric the original did not record cannot fail the reproduction
        if b is None:
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if self.tolerance == 0:
            return a == b
        return abs(b - a) <= self.tolerance * max(abs(a), abs(b))


def compare_metrics(
    original: dict[str, float], reproduced: dict[str, float], tolerance: float
) -> list[Check]:
    """One check per metric of either run, the original's order first; timings (`*seconds*`) are not results."""
    names = [*original, *(name for name in reproduced if name not in original)]
    names = [name for name in names if "seconds" not in name]
    return [Check(name, original.get(name), reproduced.get(name), tolerance) for name in names]


def table(checks: list[Check]) -> str:
    """Plain aligned text: metric | original | reproduced | |diff| | tolerance | ok."""

    def number(value: float | None, spec: str = ".10g") -> str:
        return "missing" if value is None else format(value, spec)

    header = ["metric", "original", "reproduced", "|diff|", "tolerance", "ok"]
    rows = [
        [
            c.metric,
            number(c.original),
            number(c.reproduced),
            "" if c.diff is None else ("0" if c.diff == 0 else format(c.diff, ".3g")),
            "bitwise" if c.tolerance == 0 else f"{c.tolerance:g} rel",
            ("ok" if c.ok else "FAIL") if c.original is not None else "new",
        ]
        for c in checks
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def provenance_warnings(record: dict[str, Any]) -> list[str]:
    """One line per way the code here may differ from the run's: git commit, uncommitted changes, versions."""
    warnings = []
    then = record.get("git") or {}
    now = git_state()
    if then.get("commit") and now.get("commit") and then["commit"] != now["commit"]:
        warnings.append(
            f"git commit differs: the run used {then['commit'][:12]}, this checkout is {now['commit'][:12]}"
        )
    elif then.get("commit") and not now.get("commit"):
        warnings.append(
            f"cannot check the code: genlab is not a git checkout here (the run used {then['commit'][:12]})"
        )
    dirty = [
        where for where, state in (("the original run", then), ("this checkout", now)) if state.get("dirty")
    ]
    if dirty:
        warnings.append(f"uncommitted changes in {' and '.join(dirty)}: the code may differ from its commit")
    current = package_versions()
    for name, version in (record.get("versions") or {}).items():
        if name in current and current[name] != version:
            warnings.append(
                f"{name} version differs: the run used {version}, this environment has {current[name]}"
            )
    return warnings


def default_tolerance(run: Run) -> float:
    """0 (bitwise) when the run was deterministic on CPU, which the seed contract makes repeatable."""
    deterministic = run.value("trainer.deterministic")
    accelerator = run.value("trainer.accelerator")
    gpus = (run.record.get("hardware") or {}).get("cuda_devices")
    on_cpu = accelerator == "cpu" or (accelerator in ("auto", MISSING) and gpus == [])
    return 0.0 if deterministic not in (None, False, MISSING) and on_cpu else NONDETERMINISTIC_TOLERANCE


def load_finished_run(run_dir: Path) -> Run:
    """The run to reproduce; refuses (DataError, one line) anything but a completed run with its config."""
    if not (run_dir / RECORD_NAME).is_file():
        raise DataError(f"{run_dir} has no {RECORD_NAME}; give a run directory written by `genlab train`")
    run = load_run(run_dir)
    if run.problems and not run.record:
        raise DataError(run.problems[0])
    if run.status != "completed":
        raise DataError(
            f"{run_dir} is a {run.status} run ({RECORD_NAME} status); only completed runs can be reproduced"
        )
    if not (run_dir / CONFIG_PATH).is_file():
        raise DataError(
            f"{run_dir / CONFIG_PATH} is missing; without the stored config the run cannot be re-run"
        )
    if not run.metrics:
        raise DataError(f"{run_dir / RECORD_NAME} records no final metrics; there is nothing to compare")
    return run


def primary_config(stored: str) -> str:
    """The stored composed config as a primary config: Hydra's own settings from genlab's hydra/default."""
    return "defaults:\n  - hydra: default\n  - _self_\n\n" + stored


def new_run_dir(run_dir: Path) -> Path:
    base = run_dir / "reproduce" / time.strftime("%Y-%m-%d_%H-%M-%S")
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}_{n}"), n + 1
    return path


def _override_value(text: str) -> str:
    """A path as a Hydra override value: quoted unless it is plain."""
    if re.fullmatch(r"[\w/.:+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_stored_config(run_dir: Path, trust: bool) -> None:
    """A run dir may come from someone else: its config builds only genlab/torch/lightning classes unless
    trusted (instantiating any other `_target_` runs arbitrary code)."""
    from omegaconf import OmegaConf

    from genlab.runs.loading import check_targets

    check_targets(OmegaConf.load(run_dir / CONFIG_PATH), trust, flag="--trust-config")


def reproduce(
    run_dir: Path, out: Path | None, overrides: list[str], tolerance: float | None, trust_config: bool = False
) -> int:
    run_dir = run_dir.resolve()
    run = load_finished_run(run_dir)
    check_stored_config(run_dir, trust_config)
    for line in provenance_warnings(run.record):
        print(f"warning: {line}", file=sys.stderr)
    tolerance = default_tolerance(run) if tolerance is None else tolerance
    out = (out or new_run_dir(run_dir)).resolve()
    if (out / RECORD_NAME).exists():
        raise DataError(f"{out} already holds a run ({RECORD_NAME}); choose a new --run-dir")

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="genlab-reproduce-") as config_dir:
        stored = (run_dir / CONFIG_PATH).read_text()
        (Path(config_dir) / f"{CONFIG_NAME}.yaml").write_text(primary_config(stored))
        command = [
            sys.executable, "-m", "genlab.cli", "train",
            "--config-dir", config_dir, "--config-name", CONFIG_NAME,
            f"hydra.run.dir={_override_value(str(out))}",
            "resume=null",  # a resumed run's config says resume=auto: the reproduction starts from scratch
            *overrides,
        ]  # fmt: skip
        print(f"reproducing {run_dir} in {out}", file=sys.stderr, flush=True)
        child = subprocess.Popen(command)
        try:
            returncode = child.wait()
        except KeyboardInterrupt:  # the child got the same Ctrl-C: let it mark its run interrupted
            returncode = child.wait()
    wall = time.monotonic() - t0

    record_path = out / RECORD_NAME
    if not record_path.is_file():
        raise GenlabError(f"the reproduction did not start (exit code {returncode}); see the messages above")
    record = json.loads(record_path.read_text())
    record.update(
        reproduces=str(run_dir),
        command=" ".join(["genlab", "reproduce", str(run_dir), *overrides]),
        overrides=[*run.record.get("overrides", []), *overrides],
    )
    write_json_atomic(record_path, record)
    if returncode != 0 or record.get("status") != "completed":
        raise GenlabError(
            f"the reproduction ended {record.get('status')} (exit code {returncode}); see {out / 'train.log'}"
        )

    if not overrides and (out / CONFIG_PATH).read_text() != stored:
        print(
            f"warning: {out / CONFIG_PATH} differs from the stored config; diff the two files",
            file=sys.stderr,
        )
    reproduced = load_run(out).metrics
    checks = compare_metrics(run.metrics, reproduced, tolerance)
    print(f"original:   {run_dir}\nreproduced: {out}  ({wall:.1f} s)\n")
    print(table(checks))
    failed = [c.metric for c in checks if not c.ok]
    if failed:
        print(f"\n{len(failed)} metric(s) differ beyond tolerance: {', '.join(failed)}")
        return 1
    print(
        f"\nall {len(checks)} metrics match ({'bitwise' if tolerance == 0 else f'within {tolerance:g} relative'})"
    )
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="genlab reproduce",
        description="Re-run a finished run from its stored config (RUN_DIR/.hydra/config.yaml) in a new run dir "
        "and compare its final metrics with the original's. Exit code 1 when a metric differs beyond tolerance.",
    )
    parser.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a completed run directory (holds run.json)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="Hydra overrides applied on top of the stored config, e.g. trainer.max_steps=100; "
        "a config group needs a leading + (+logger=csv)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="REL",
        help=f"relative tolerance per metric; default 0 (bitwise) for a deterministic CPU run, "
        f"else {NONDETERMINISTIC_TOLERANCE:g}",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        dest="out",
        metavar="DIR",
        help="the new run dir (default RUN_DIR/reproduce/<time>)",
    )
    parser.add_argument(
        "--trust-config",
        action="store_true",
        help="build the stored config even if it names classes outside genlab/torch/lightning "
        "(only for run dirs from a source you trust: building them runs their code)",
    )
    args = parser.parse_intermixed_args(argv)
    if args.tolerance is not None and not args.tolerance >= 0:
        parser.error("--tolerance must be a number >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of `genlab reproduce`; user errors print one line and exit 2, a metric mismatch exits 1."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        code = reproduce(args.run_dir, args.out, args.overrides, args.tolerance, args.trust_config)
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
