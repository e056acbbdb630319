"""Finding and reading run directories (run.json, .hydra/config.yaml, csv/metrics.csv) without torch or Hydra.

Configs are read with PyYAML's C loader into plain dicts: OmegaConf.load costs ~40 ms a file, too slow for
comparing 100 runs in under 2 seconds, and comparison only needs the values as written plus simple references.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from genlab.errors import DataError
from genlab.runs.record import RECORD_NAME

CONFIG_PATH = Path(".hydra") / "config.yaml"
METRICS_CSV = Path("csv") / "metrics.csv"
CORRUPT = "corrupt"  # the status shown for a run whose run.json cannot be read
MISSING = object()  # a config key the run does not have


class _ConfigLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):
    """Safe YAML loader that, like OmegaConf, reads `1e-3` as a float (YAML 1.1 insists on a dot)."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?\d[\d_]*(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789"),
)


@dataclass
class Run:
    """One run directory as `genlab compare` sees it."""

    path: Path
    record: dict[str, Any]  # run.json; empty when it could not be read
    config: (
        dict[str, Any] | None
    )  # .hydra/config.yaml as written (interpolations unresolved); None if unreadable
    problems: list[str] = field(default_factory=list)  # what could not be read, one line each
    name: str = ""  # short name, unique among the runs being compared (set by `short_names`)

    @property
    def status(self) -> str:
        return str(self.record.get("status", "unknown")) if self.record else CORRUPT

    @property
    def experiment(self) -> str | None:
        return self.record.get("experiment")

    @property
    def steps(self) -> int | None:
        return self.record.get("steps")

    @property
    def wall_time_s(self) -> float | None:
        return self.record.get("wall_time_s")

    @property
    def metrics(self) -> dict[str, float]:
        """Final metrics from run.json: only finite-or-nan numbers, so later code can do arithmetic."""
        raw = self.record.get("metrics") or {}
        if not isinstance(raw, dict):
            return {}
        return {
            k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config) if self.config is not None else {}

    def value(self, key: str) -> Any:
        """The config value at dotted `key` with references resolved; run.json fields (`experiment`, `seed`,
        `status`...) when the config has no such key; MISSING otherwise."""
        if key in self.flat_config:
            return resolve(self.flat_config, key)
        if key == "status":
            return self.status
        if key in self.record and not isinstance(self.record[key], (dict, list)):
            return self.record[key]
        return MISSING

    def curves(self) -> dict[str, tuple[list[float], list[float]]]:
        """Learning curves from csv/metrics.csv: metric -> (steps, values); empty when the file is absent."""
        return read_curves(self.path / METRICS_CSV)


def find_run_dirs(paths: list[str]) -> list[Path]:
    """Run directories (folders holding run.json) named by `paths`: run dirs, folders searched recursively,
    or globs; in the order given, each folder's runs in natural order (0, 1, 2, ..., 10)."""
    found: dict[Path, None] = {}  # ordered set
    for spec in paths:
        if os.path.exists(spec):
            matches = [spec]
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True), key=_natural_key)
            if not matches:
                raise DataError(f"{spec} matches nothing; give a run directory, a multirun folder or a glob")
        else:
            raise DataError(f"{spec} does not exist; give a run directory, a multirun folder or a glob")
        runs = [run for match in matches for run in _walk(Path(match))]
        if not runs:
            raise DataError(
                f"no run directories (folders with {RECORD_NAME}) under {spec}; "
                "point compare at outputs/train/runs/<run> or a multirun folder"
            )
        found.update(dict.fromkeys(run.resolve() for run in runs))  # a run named twice is one run
    return list(found)


def _walk(path: Path) -> list[Path]:
    """Run dirs at or below `path`; a run dir's own subfolders are not searched, nor hidden folders."""
    if path.is_file():
        return [path.parent] if path.name == RECORD_NAME else []
    if (path / RECORD_NAME).is_file():
        return [path]
    runs: list[Path] = []
    try:
        entries = sorted(os.scandir(path), key=lambda e: _natural_key(e.name))
    except (NotADirectoryError, PermissionError):
        return runs
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith("."):
            runs.extend(_walk(Path(entry.path)))
    return runs


def _natural_key(text: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text))]


def load_run(path: Path) -> Run:
    """Read one run dir; unreadable files become `problems`, never exceptions."""
    problems = []
    record: dict[str, Any] = {}
    record_path = path / RECORD_NAME
    try:
        data = json.loads(record_path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        record = data
    except (OSError, ValueError) as error:
        problems.append(f"{record_path} is unreadable ({type(error).__name__}: {_first_line(error)})")
    config = None
    config_path = path / CONFIG_PATH
    if config_path.is_file():
        try:
            config = yaml.load(config_path.read_text(), Loader=_ConfigLoader) or {}
            if not isinstance(config, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError, yaml.YAMLError) as error:
            config = None
            problems.append(f"{config_path} is unreadable ({type(error).__name__}: {_first_line(error)})")
    elif record:
        problems.append(f"{config_path} is missing; its config keys are left blank")
    return Run(path=path, record=record, config=config, problems=problems)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else ""


def short_names(runs: list[Run]) -> None:
    """Name each run by its path relative to the folder all runs share (a multirun's jobs become 0, 1, ...)."""
    paths = [run.path.resolve() for run in runs]
    if len(paths) == 1:
        runs[0].name = paths[0].name
        return
    common = Path(os.path.commonpath(paths))
    for run, path in zip(runs, paths):
        run.name = str(path.relative_to(common)) if path != common else path.name


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": leaf}; lists and empty dicts are leaves."""
    if not isinstance(node, dict) or (not node and prefix):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")


def is_interpolated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def resolve(flat: dict[str, Any], key: str, _depth: int = 0) -> Any:
    """The value at `key` with `${a.b}` / `${.sibling}` references to other keys resolved. Resolvers such as
    `${oc.env:...}` or `${hydra:...}` depended on the machine and moment of the run: they stay as written."""
    value = flat[key]
    if not is_interpolated(value) or _depth > 16:
        return value
    whole = _INTERPOLATION.fullmatch(value)
    parent = key.rsplit(".", 1)[0] if "." in key else ""

    def target(ref: str) -> Any:
        if ":" in ref:
            return MISSING
        if ref.startswith("."):
            ups = len(ref) - len(ref.lstrip("."))
            base = parent.split(".") if parent else []
            base = base[: len(base) - (ups - 1)] if ups > 1 else base
            ref = ".".join([*base, ref.lstrip(".")])
        return resolve(flat, ref, _depth + 1) if ref in flat else MISSING

    if whole:
        found = target(whole.group(1))
        return value if found is MISSING else found
    parts = []
    last = 0
    for match in _INTERPOLATION.finditer(value):
        found = target(match.group(1))
        if found is MISSING:
            return value
        parts += [value[last : match.start()], str(found)]
        last = match.end()
    return "".join([*parts, value[last:]])


def read_curves(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Lightning CSVLogger's metrics.csv (columns epoch, step and one per metric; rows sparse) as curves."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            names = [n for n in reader.fieldnames or [] if n not in ("step", "epoch")]
            for i, row in enumerate(reader):
                step = _number(row.get("step"))
                x = float(i) if step is None else step
                for name in names:
                    y = _number(row.get(name))
                    if y is not None:
                        xs, ys = curves.setdefault(name, ([], []))
                        xs.append(x)
                        ys.append(y)
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    return curves


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isinf(value) else value
