"""`genlab compare`: rank run directories by a final metric (the way their records declare it is better), show
the config keys that differ, plot them. Builds a Comparison (runs/comparison.py) that render.py and plots.py read.

Reads only run directories (run.json, .hydra/config.yaml, csv/metrics.csv); never imports torch, Lightning or
OmegaConf, and matplotlib only when plotting, so the table of 100 runs prints in well under 2 seconds
(benchmarks/compare_runs.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from genlab.directions import MODES, declared_mode
from genlab.errors import ConfigError, DataError, GenlabError
from genlab.runs import plots, render
from genlab.runs.comparison import Comparison, Group, assign_colors, format_value
from genlab.runs.rundirs import CORRUPT, MISSING, Run, find_run_dirs, is_interpolated, load_run, short_names

# Keys that differ between any two runs for reasons other than the experiment (where and when it ran).
IGNORED_ROOTS = ("paths", "hydra", "runtime", "output_dir", "data_dir", "cache_dir", "experiment_name")
IGNORED_LEAVES = ("output_dir", "run_dir", "log_dir", "save_dir", "dirpath", "default_root_dir")


def metric_mode(runs: list[Run], metric: str) -> tuple[str, str, str | None]:
    """Which way `metric` is better, as the runs' records declare it (run.json `metric_modes`, written from the
    family's and callbacks' declarations): (mode, source, a warning or None).

    Runs that recorded neither the metric nor a direction for it do not vote, nor runs older than the
    declarations; a run that recorded the metric without declaring it counts it loss-like ("min"). No vote,
    or votes that disagree: "min", the direction of everything undeclared (with a warning when they disagree).
    """
    votes: dict[str, list[str]] = {}
    for run in runs:
        declared = run.record.get("metric_modes")
        if not isinstance(declared, dict):
            continue
        mode = declared_mode(metric, declared)
        if mode is None and metric in run.metrics:
            mode = "min"
        if mode in MODES:
            votes.setdefault(mode, []).append(run.name)
    if not votes:
        return "min", "default", None
    if len(votes) == 1:
        return next(iter(votes)), "declared", None
    said = "; ".join(f"{mode}: {_few(names)}" for mode, names in sorted(votes.items()))
    return (
        "min",
        "default",
        f"runs disagree on which way {metric} is better ({said}); ranking by min, --mode max overrides",
    )


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def shared_metrics(runs: list[Run]) -> set[str]:
    """The final metrics every completed run recorded (every run with metrics, when none completed)."""
    recorded = [run.metrics for run in runs if run.status == "completed" and run.metrics]
    recorded = recorded or [run.metrics for run in runs if run.metrics]
    return set.intersection(*(set(metrics) for metrics in recorded)) if recorded else set()


def differing_keys(runs: list[Run]) -> list[str]:
    """Flattened config keys whose values differ between runs, in config order.

    Skipped: where/when keys (paths, output dirs), interpolated keys (`${seed}`: their source is what differs),
    and keys under a node whose `_target_` differs (other class, so its arguments are not comparable).
    """
    configs = [run.flat_config for run in runs if run.config is not None]
    if len(configs) < 2:
        return []
    ordered: dict[str, None] = {}
    for flat in configs:
        ordered.update(dict.fromkeys(flat))
    differ = []
    for key in ordered:
        parts = key.split(".")
        if parts[0] in IGNORED_ROOTS or parts[-1] in IGNORED_LEAVES:
            continue
        values = [flat.get(key, MISSING) for flat in configs]
        if any(is_interpolated(v) for v in values):
            continue
        if len({_canonical(v) for v in values}) > 1:
            differ.append(key)
    targets = {key[: -len("._target_")] for key in differ if key.endswith("._target_")}

    def under_changed_target(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in targets for i in range(1, len(parts) - (key.endswith("._target_"))))

    # `scheduler: {}` in one run beside `scheduler._target_` in another: the deeper key says it
    nodes = {key for key in differ if any(other.startswith(key + ".") for other in differ)}
    return [key for key in differ if not under_changed_target(key) and key not in nodes]


def _canonical(value: Any) -> str:
    return "<missing>" if value is MISSING else json.dumps(value, sort_keys=True, default=str)


def _score(run: Run, metric: str) -> float | None:
    value = run.metrics.get(metric)
    return value if run.status == "completed" and value is not None and math.isfinite(value) else None


def compare(
    runs: list[Run],
    metric: str = "val/loss",
    mode: str = "auto",
    by: str | None = None,
    all_columns: bool = False,
) -> Comparison:
    """Rank `runs` by `metric` (completed runs only), find the differing keys, group by `by` if given.

    `mode` "auto" takes the direction the runs declare (`metric_mode`). A table over several families stays
    readable: the metrics shown are the ranking one and those every completed run recorded (the others are
    `hidden`), the keys those that differ within an experiment (the others are `recipe_keys`); `all_columns`
    shows everything.
    """
    notes = []
    if mode == "auto":
        mode, source, note = metric_mode(runs, metric)
        notes += [note] if note else []
    else:
        source = "--mode"
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted(
        (run for run in runs if _score(run, metric) is not None), key=lambda r: sign * _score(r, metric)
    )
    ranks = {id(run): i + 1 for i, run in enumerate(ranked)}
    rest = [run for run in runs if id(run) not in ranks]
    names = sorted({name for run in runs for name in run.metrics} - {metric})
    shared = shared_metrics(runs)
    shown = names if all_columns else [name for name in names if name in shared]
    has_metric = any(metric in run.metrics for run in runs)
    sources = init_sources(runs)
    keys = differing_keys(runs)
    # the init_from column says it in short, beside the runs it names
    keys = [key for key in keys if key != "init_from"] if sources else keys
    recipe = [] if all_columns else recipe_keys(runs, keys)
    comparison = Comparison(
        runs=ranked + rest,
        metric=metric,
        mode=mode,
        keys=[key for key in keys if key not in recipe],
        recipe_keys=recipe,
        metrics=[metric, *shown] if has_metric else shown,
        hidden=[name for name in names if name not in shown],
        ranks=ranks,
        by=by,
        sources=sources,
        mode_source=source,
        notes=notes,
    )
    comparison.modes = {name: metric_mode(runs, name)[0] for name in comparison.all_metrics}
    comparison.modes[metric] = mode
    if by:
        comparison.groups = group_runs(comparison.runs, by, comparison.all_metrics, metric, sign)
    comparison.colors = assign_colors(comparison.runs, comparison.groups)
    return comparison


def recipe_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """Of `keys`, those each experiment's runs hold to one value, when the runs come from several experiments:
    its recipe (another model, optimizer, sample interval), which the experiment column already says."""
    configs: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.config is not None and run.experiment:
            configs.setdefault(str(run.experiment), []).append(run.flat_config)
    if len(configs) < 2:
        return []
    return [
        key
        for key in keys
        if all(len({_canonical(flat.get(key, MISSING)) for flat in flats}) == 1 for flats in configs.values())
    ]


def init_sources(runs: list[Run]) -> dict[int, str]:
    """id(run) -> the `init_from` its weights came from, as a short label; empty when no run has one.

    A source among the compared runs is named as in the table (`base@2000`); any other by its run folder's
    name (or the file's, for a checkpoint outside a run's `checkpoints/`), with the step run.json recorded.
    """
    compared = {run.path.resolve(): run.name for run in runs}
    sources = {}
    for run in runs:
        recorded = run.record.get("init_from")
        if isinstance(recorded, dict) and recorded.get("checkpoint"):
            path, step = Path(str(recorded["checkpoint"])), recorded.get("step")
        elif run.flat_config.get("init_from"):  # asked for, but not loaded (e.g. a run that failed first)
            path, step = Path(str(run.flat_config["init_from"])), None
        else:
            continue
        label = next((name for folder, name in compared.items() if _inside(path, folder)), None)
        if label is None:
            label = path.parent.parent.name if path.parent.name == "checkpoints" else path.name
        sources[id(run)] = label if step is None else f"{label}@{step}"
    return sources


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder)
    except OSError:
        return False


def group_runs(runs: list[Run], key: str, metrics: list[str], rank_by: str, sign: float = 1.0) -> list[Group]:
    """Runs grouped by their value at config key `key` (or a run.json field such as `experiment`), with the
    mean, min and max of every metric over each group's completed runs; best mean of `rank_by` first
    (`sign` -1 when larger is better)."""
    values = [run.value(key) for run in runs]
    if all(value is MISSING for value in values):
        known = sorted({k for run in runs for k in run.flat_config})
        hint = ", ".join(k for k in known if key.split(".")[-1] in k)[:200] or "see .hydra/config.yaml"
        raise ConfigError(f"--by {key}: no run has this config key; did you mean one of: {hint}")
    groups: dict[str, Group] = {}
    for run, value in zip(runs, values):
        label = format_value(value, key)
        groups.setdefault(label, Group(value=label, runs=[])).runs.append(run)
    for group in groups.values():
        for metric in metrics:
            scores = [s for run in group.runs if (s := _score(run, metric)) is not None]
            if scores:
                group.stats[metric] = (len(scores), sum(scores) / len(scores), min(scores), max(scores))

    def order(group: Group) -> tuple[int, float]:
        stat = group.stats.get(rank_by)
        return (0, sign * stat[1]) if stat else (1, 0.0)

    return sorted(groups.values(), key=order)


def load_runs(paths: list[str]) -> list[Run]:
    """Every run dir under `paths`, read; corrupt records are kept (status 'corrupt') with a warning."""
    runs = [load_run(path) for path in find_run_dirs(paths)]
    short_names(runs)
    if all(run.status == CORRUPT for run in runs):
        listed = ", ".join(str(run.path) for run in runs[:3]) + (" ..." if len(runs) > 3 else "")
        raise DataError(f"no readable run.json among {len(runs)} run directories ({listed})")
    return runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlab compare",
        description="Compare run directories: a table ranked by a final metric (best first, completed runs only) "
        "with the config keys that differ between the runs; PNGs of the learning curves (one per logged metric) "
        "and a bar chart of the ranking metric per run or per --by group (mean, min-max bars); --format html: one "
        "page with the tables, the plots and each run's latest sample grids.",
        epilog="examples:\n"
        "  genlab compare outputs/train/multirun/2026-01-01_10-00-00\n"
        "  genlab compare 'outputs/train/runs/*_mnist_*' --metric fid/classifier-mnist5k/5000\n"
        "  genlab compare outputs/train/multirun/... --by model._target_ --format md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="run dir, multirun folder, any folder, or a glob"
    )
    parser.add_argument("--metric", help="final metric to rank by (default: val/loss)")
    parser.add_argument(
        "--mode",
        choices=("auto", "min", "max"),
        default="auto",
        help="which way is better; auto: as the runs declare it (run.json metric_modes), min where undeclared",
    )
    parser.add_argument("--by", metavar="KEY", help="group runs by a config key (e.g. model._target_, seed)")
    parser.add_argument(
        "--all-columns",
        action="store_true",
        help="every final metric, not only those every completed run recorded, and every differing config key, "
        "also those that differ only between experiments (csv always has them all)",
    )
    parser.add_argument("--format", choices=("table", "md", "csv", "html"), default="table")
    parser.add_argument(
        "--out", metavar="DIR", help="folder for the PNGs and compare.html (default: first PATH/compare)"
    )
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    return parser


def default_out(paths: list[str], runs: list[Run]) -> Path:
    first = Path(paths[0])
    if first.is_dir():
        return first / "compare"
    if len(runs) == 1:
        return runs[0].path / "compare"
    return Path(os.path.commonpath([run.path.resolve() for run in runs])) / "compare"


def run_compare(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    runs = load_runs(args.paths)
    for run in runs:
        for problem in run.problems:
            print(f"warning: {problem}", file=sys.stderr)
    metric = args.metric or "val/loss"
    if not any(metric in run.metrics for run in runs):
        known = sorted({m for run in runs for m in run.metrics})
        message = f"no run recorded metric {metric!r}; known: {', '.join(known) or 'none'}"
        if args.metric:
            raise ConfigError(message + "; choose one with --metric")
        print(f"warning: {message}; runs are not ranked", file=sys.stderr)
    comparison = compare(runs, metric=metric, mode=args.mode, by=args.by, all_columns=args.all_columns)
    for note in comparison.notes:
        print(f"warning: {note}", file=sys.stderr)
    left_out = []
    if comparison.hidden:
        left_out.append(
            f"{len(comparison.hidden)} metrics not every completed run recorded ({_few(comparison.hidden)})"
        )
    if comparison.recipe_keys:
        left_out.append(
            f"{len(comparison.recipe_keys)} config keys that differ only between experiments "
            f"({_few(comparison.recipe_keys)})"
        )
    if left_out and args.format != "csv":
        print(f"note: not shown: {'; '.join(left_out)}; --all-columns shows them", file=sys.stderr)

    if args.format == "md":
        print(render.markdown(comparison), end="")
    elif args.format == "csv":
        print(render.csv_text(comparison), end="")
    elif args.format == "table":
        render.rich_table(comparison)
    sys.stdout.flush()  # the table first: plotting takes longer than everything else

    out = Path(args.out) if args.out else default_out(args.paths, runs)
    images: list[Path] = []
    try:
        if not args.no_plots:
            images = plots.plot_all(comparison, out)
            print(f"plots: {len(images)} PNG files in {out}", file=sys.stderr)
        if args.format == "html":
            out.mkdir(parents=True, exist_ok=True)
            page = out / "compare.html"
            page.write_text(render.html(comparison, images), encoding="utf-8")
            print(f"wrote {page}")
    except OSError as error:
        raise DataError(
            f"cannot write to {out} ({error.strerror or error}); choose a folder with --out"
        ) from None
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of `genlab compare`; user errors print one line and exit 1."""
    try:
        run_compare(list(sys.argv[1:] if argv is None else argv))
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
