"""The study's summary table (every image metric per family: mean [min-max] over seeds) and its side-by-side
sample grids, from the run dirs the multirun wrote.

    python experiments/compare_mnist/summarize.py outputs/compare_mnist

Writes summary.md and samples.png next to this file. `genlab compare --by experiment` ranks and charts one
metric at a time; this puts them all in one table, using the same loading and grouping code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.runs.compare import compare, load_runs

HERE = Path(__file__).parent
EXTRACTOR = "classifier-mnist5k"
# (column, metric name without /<extractor>/<n>, format)
COLUMNS = [
    ("FID ↓", "fid", "{:.1f}"),
    ("KID ↓", "kid", "{:.2f}"),
    ("IS ↑", "is", "{:.2f}"),
    ("precision ↑", "precision", "{:.3f}"),
    ("recall ↑", "recall", "{:.3f}"),
    ("NN dist. generated", "novelty/nn_dist_generated", "{:.2f}"),
    ("NN dist. held-out real", "novelty/nn_dist_heldout", "{:.2f}"),
    ("copy fraction", "novelty/copy_fraction", "{:.3f}"),
]


def cell(stat: tuple[int, float, float, float] | None, fmt: str) -> str:
    if stat is None:
        return "—"
    _, mean, low, high = stat
    return f"{fmt.format(mean)} [{fmt.format(low)}–{fmt.format(high)}]"


def stat(stats: dict, metric: str) -> tuple[int, float, float, float] | None:
    """`metric`'s statistics whatever its count: novelty's is capped by the 500 held-out digits."""
    return next((value for key, value in stats.items() if key.startswith(f"{metric}/{EXTRACTOR}/")), None)


def spread(values: list[float]) -> str:
    return f"{sum(values) / len(values):.1f} [{min(values):.1f}–{max(values):.1f}]" if values else "—"


def summary(run_root: str, n_samples: int) -> str:
    runs = load_runs([run_root])
    suffix = f"/{EXTRACTOR}/{n_samples}"
    comparison = compare(runs, metric=f"fid{suffix}", by="experiment")
    header = [
        "family",
        "seeds done",
        *(name for name, _, _ in COLUMNS),
        "wall time (min)",
        "of which scoring",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in comparison.groups:
        done = [run for run in group.runs if run.status == "completed"]
        walls = [run.wall_time_s / 60 for run in done if run.wall_time_s is not None]
        scoring = [run.metrics.get(f"fidelity_seconds{suffix}", 0.0) / 60 for run in done]
        cells = [cell(stat(group.stats, metric), fmt) for _, metric, fmt in COLUMNS]
        row = [group.value, f"{len(done)}/{len(group.runs)}", *cells, spread(walls), spread(scoring)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def sample_figure(run_root: str, out: Path, seed: int = 0) -> None:
    """The final sample grid (the newest samples/epoch_*.png) of each family's `seed` run, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    runs = [
        run for run in load_runs([run_root]) if run.status == "completed" and run.record.get("seed") == seed
    ]
    runs = sorted(
        (run for run in runs if any((run.path / "samples").glob("epoch_*.png"))), key=lambda r: r.experiment
    )
    fig = Figure(figsize=(4 * len(runs), 4.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, run in enumerate(runs):
        ax = fig.add_subplot(1, len(runs), i + 1)
        grids = sorted((run.path / "samples").glob("epoch_*.png"))  # last.png is the newest of these
        ax.imshow(imread(grids[-1]), cmap="gray")
        ax.set_title(f"{run.experiment} (seed {seed})")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_root", nargs="?", default="outputs/compare_mnist")
    parser.add_argument("--n-samples", type=int, default=1000)
    args = parser.parse_args()
    table = summary(args.run_root, args.n_samples)
    (HERE / "summary.md").write_text(table)
    print(table)
    sample_figure(args.run_root, HERE / "samples.png")


if __name__ == "__main__":
    main()
