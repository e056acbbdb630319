"""What `genlab compare` hands to its outputs: the Comparison of a set of runs, and the small helpers its tables
and plots share (cell text, run colours, sample files). Data flows one way: compare.py builds a Comparison,
render.py and plots.py read it; this module imports neither of them (nor matplotlib, torch or OmegaConf).
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.runs.rundirs import MISSING, Run, _natural_key

# Matplotlib's tab10 and tab20 qualitative palettes: distinct colours for up to 10 (20) runs or groups
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
TAB10 += ["#17becf"]
TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd"]
TAB20 += ["#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d"]
TAB20 += ["#17becf", "#9edae5"]
SAMPLES_DIR = "samples"


@dataclass
class Group:
    """Runs sharing one value of the `--by` key; statistics over its completed runs only."""

    value: str  # the key's value as shown in the table
    runs: list[Run]
    # metric -> (n, mean, min, max) over the completed runs that recorded it
    stats: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return sum(run.status == "completed" for run in self.runs)


@dataclass
class Comparison:
    runs: list[Run]  # best first; unranked runs after the ranked ones, in the order found
    metric: str
    mode: str  # "min" | "max"
    keys: list[str]  # config keys whose values differ between the runs
    # the final metrics shown: the ranking metric first, then those every completed run recorded
    metrics: list[str]
    ranks: dict[int, int]  # id(run) -> 1-based rank, for runs eligible for best-of
    by: str | None = None
    groups: list[Group] = field(default_factory=list)
    # id(run) -> where its weights started (`init_from`, shortened); empty when no run was fine-tuned
    sources: dict[int, str] = field(default_factory=dict)
    # metrics some runs recorded but not every completed run: in CSV, per-experiment tables, --all-columns
    hidden: list[str] = field(default_factory=list)
    # differing keys each experiment holds to one value (its recipe): the experiment column says them already;
    # in CSV and with --all-columns
    recipe_keys: list[str] = field(default_factory=list)
    modes: dict[str, str] = field(default_factory=dict)  # metric -> "min" | "max", for every metric
    mode_source: str = "default"  # where `mode` came from: "declared" (run.json), "--mode" or "default"
    colors: dict[int, str] = field(default_factory=dict)  # id(run) -> "#rrggbb", the same in every plot
    notes: list[str] = field(default_factory=list)  # warnings for the user, one line each

    def rank(self, run: Run) -> int | None:
        return self.ranks.get(id(run))

    def color(self, run: Run) -> str:
        return self.colors.get(id(run), TAB10[0])

    @property
    def all_metrics(self) -> list[str]:
        return [*self.metrics, *self.hidden]

    @property
    def all_keys(self) -> list[str]:
        return [*self.keys, *self.recipe_keys]


def palette(n: int) -> list[str]:
    """`n` distinguishable colours: tab10, tab20, then hues spread around the circle at two lightnesses."""
    if n <= len(TAB10):
        return TAB10[:n]
    if n <= len(TAB20):
        return TAB20[:n]
    colors = []
    for i in range(n):
        r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.42 if i % 2 else 0.6, 0.65)
        colors.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return colors


def assign_colors(runs: list[Run], groups: list[Group]) -> dict[int, str]:
    """A colour per run, in table order; with groups one per group, so seeds of a group share it."""
    if groups:
        colors = palette(len(groups))
        return {id(run): color for group, color in zip(groups, colors) for run in group.runs}
    return {id(run): color for run, color in zip(runs, palette(len(runs)))}


def format_value(value: Any, key: str = "") -> str:
    """A config value as a short cell: class paths shortened to the class name, lists compact."""
    if value is MISSING:
        return "—"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value.rsplit(".", 1)[-1] if key.endswith("_target_") else value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str).replace('"', "")
    return str(value)


def sample_files(run: Run, suffixes: tuple[str, ...] = (".png",)) -> list[Path]:
    """The run's latest sample files: of each series in samples/ (`epoch_003.png`, `recon_epoch_003.png`,
    `last.png`) the file with the highest number, without byte-identical copies (`last.png` repeats the
    latest epoch's grid)."""
    folder = run.path / SAMPLES_DIR
    try:
        files = [path for path in folder.iterdir() if path.suffix in suffixes and path.is_file()]
    except OSError:
        return []
    latest: dict[str, Path] = {}
    for path in sorted(files, key=lambda p: _natural_key(p.name)):
        latest[re.sub(r"\d+", "#", path.name)] = path  # natural order: the last one seen is the newest
    chosen, seen = [], set()
    for path in sorted(latest.values(), key=lambda p: _natural_key(p.name)):
        try:
            digest = hashlib.sha1(path.read_bytes()).digest()
        except OSError:
            continue
        if digest not in seen:
            seen.add(digest)
            chosen.append(path)
    return chosen
