"""The comparison as text: a rich terminal table, Markdown, CSV, or one self-contained HTML page (tables, plots
and each run's latest sample grids)."""

from __future__ import annotations

import base64
import csv
import html as html_lib
import io
import math
import re
import sys
from pathlib import Path
from typing import Any

from genlab.runs.comparison import Comparison, format_value, sample_files
from genlab.runs.rundirs import MISSING, Run

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "corrupt": "magenta",
}


def run_table(
    comparison: Comparison,
    metrics: list[str] | None = None,
    runs: list[Run] | None = None,
    keys: list[str] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Header and raw cell values, one row per run, best first; the metrics and keys shown unless named."""
    metrics = comparison.metrics if metrics is None else metrics
    keys = list(comparison.keys if keys is None else keys)
    if comparison.by and comparison.by not in keys and comparison.by not in ("experiment", "status"):
        keys.insert(0, comparison.by)  # experiment and status have their own columns
    # where fine-tuned runs' weights came from, when any was: right after what they are
    source = ["init_from"] if comparison.sources else []
    header = ["#", "run", "experiment", *source, *keys, "status", "steps", "wall_time_s", *metrics]
    rows = []
    for run in comparison.runs if runs is None else runs:
        rows.append(
            [
                comparison.rank(run),
                run.name,
                run.experiment,
                *[comparison.sources.get(id(run)) for _ in source],
                *[_config_cell(run, key, comparison.by) for key in keys],
                run.status,
                run.steps,
                run.wall_time_s,
                *[run.metrics.get(metric) for metric in metrics],
            ]
        )
    return header, rows


def _config_cell(run: Run, key: str, by: str | None) -> Any:
    value = run.value(key) if key == by else run.flat_config.get(key, MISSING)
    return "null" if value is None else value  # a null in the config is a value; "—" means the key is absent


def group_table(comparison: Comparison) -> tuple[list[str], list[list[Any]]]:
    """One row per `--by` group: runs, completed runs, and mean/min/max of the ranking metric over completed ones."""
    metric = comparison.metric
    header = [
        comparison.by or "group",
        "runs",
        "completed",
        f"{metric} mean",
        f"{metric} min",
        f"{metric} max",
    ]
    rows = []
    for group in comparison.groups:
        n, mean, low, high = group.stats.get(metric, (0, None, None, None))
        rows.append([group.value, len(group.runs), group.completed, mean, low, high])
    return header, rows


def cell(value: Any, column: str) -> str:
    """A raw value as display text (4 significant digits for metrics, minutes for wall time)."""
    if value is None or value is MISSING:
        return "—"
    if column == "wall_time_s" and isinstance(value, (int, float)):
        return _duration(float(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return format_value(value, column)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _numeric(column: str, comparison: Comparison) -> bool:
    return (
        column in ("#", "steps", "wall_time_s", "runs", "completed")
        or column in comparison.modes
        or (column.startswith(f"{comparison.metric} "))
    )


def _heading(column: str, comparison: Comparison) -> str:
    """A column's name as shown on screen: metrics with an arrow saying which way is better."""
    if column == "wall_time_s":
        return "wall time"
    mode = comparison.modes.get(column)
    return column if mode is None else f"{column} {'↑' if mode == 'max' else '↓'}"


def _title(comparison: Comparison) -> str:
    ranked = len(comparison.ranks)
    source = {"declared": "as the runs declare it", "--mode": "--mode"}.get(comparison.mode_source)
    how = f"{comparison.mode} is best" + (f", {source}" if source else "")
    return f"{len(comparison.runs)} runs, {ranked} ranked by {comparison.metric} ({how}; completed runs only), best first"


def rich_table(comparison: Comparison) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # piped output keeps every column whole instead of squeezing the table to 80 characters
    console = Console(width=None if sys.stdout.isatty() else 10_000, highlight=False)
    tables = [("runs", *run_table(comparison))]
    if comparison.groups:
        tables.append((f"by {comparison.by}", *group_table(comparison)))
    for title, header, rows in tables:
        table = Table(title=_title(comparison) if title == "runs" else title, title_justify="left")
        for column in header:
            table.add_column(
                _heading(column, comparison),
                justify="right" if _numeric(column, comparison) else "left",
                overflow="fold",
            )
        for row in rows:
            # Text, not markup: a cell like "[mnist5k, vae]" would read as a style tag
            cells = [
                Text(cell(v, c), style=STATUS_STYLE.get(v, "") if c == "status" else "")
                for v, c in zip(row, header)
            ]
            bold = title == "runs" and row[0] == 1
            table.add_row(*cells, style="bold" if bold else None)
        console.print(table)


def markdown(comparison: Comparison) -> str:
    """GitHub Markdown table(s), for experiment READMEs."""
    parts = [_markdown_table(comparison, *run_table(comparison))]
    if comparison.groups:
        parts.append(_markdown_table(comparison, *group_table(comparison)))
    return "\n".join(parts)


def _markdown_table(comparison: Comparison, header: list[str], rows: list[list[Any]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| " + " | ".join(esc("wall time" if c == "wall_time_s" else c) for c in header) + " |",
        "|" + "|".join("---:" if _numeric(c, comparison) else "---" for c in header) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(esc(cell(v, c)) for v, c in zip(row, header)) + " |")
    return "\n".join(lines) + "\n"


def csv_text(comparison: Comparison) -> str:
    """One row per run with full-precision numbers; with --by the group key is a column."""
    header, rows = run_table(
        comparison, comparison.all_metrics, keys=comparison.all_keys
    )  # CSV: for programs
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None or v is MISSING else _csv_value(v, c) for v, c in zip(row, header)])
    return buffer.getvalue()


def _csv_value(value: Any, column: str) -> str:
    if isinstance(value, float):
        return repr(value)
    return format_value(value, column)


def html(comparison: Comparison, images: list[Path]) -> str:
    """A self-contained page: the tables, every PNG plot, then each run's latest sample grids, all embedded as
    data URIs; a run's colour swatch in the tables is its colour in the plots."""
    sections = [f"<h1>genlab compare</h1>\n<p>{_esc(_title(comparison))}</p>"]
    sections += [f'<p class="warning">warning: {_esc(note)}</p>' for note in comparison.notes]
    sections.append(_html_table(comparison, *run_table(comparison)))
    if comparison.groups:
        sections.append(f"<h2>by {_esc(str(comparison.by))}</h2>")
        sections.append(_html_table(comparison, *group_table(comparison)))
    if comparison.hidden or comparison.recipe_keys:
        sections.append(_every_column(comparison))
    sections.append(_samples(comparison))
    figures = []
    for image in images:
        name = _esc(Path(image).stem)
        figures.append(
            f'<figure><img alt="{name}" src="{_data_uri(Path(image))}"><figcaption>{name}</figcaption></figure>'
        )
    if figures:
        sections.append('<h2>plots</h2>\n<div class="plots">\n' + "\n".join(figures) + "\n</div>")
    body = "\n".join(section for section in sections if section)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>genlab compare</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:3px 8px}td{white-space:nowrap}th{background:#f3f3f3;vertical-align:bottom}"
    "td.num{text-align:right}"
    "tr.best{font-weight:bold}.completed{color:#11772d}.failed{color:#b00}.interrupted{color:#a60}"
    ".running{color:#07a}.corrupt{color:#a0a}.pruned{color:#777}.warning{color:#a60}"
    ".scroll{overflow-x:auto;max-width:100%}figure{margin:0 0 1em}img{max-width:100%}"
    ".plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em;align-items:start}.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;border-radius:2px;"
    "vertical-align:baseline}.runs{display:flex;flex-wrap:wrap;gap:1em}.run{border:1px solid #ccc;"
    "border-top-width:6px;padding:.5em;max-width:100%}.run h3{margin:0 0 .4em;font-size:1em}"
    ".run figure{display:inline-block;vertical-align:top;margin:0 .6em 0 0}.run img{height:180px;image-rendering:pixelated}"
    "figcaption{font-size:.85em;color:#555}pre{font-size:.8em;max-width:60em;white-space:pre-wrap}"
    "details{margin-bottom:1em}summary{cursor:pointer}"
)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _esc(text: str) -> str:
    return html_lib.escape(text)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{color}"></span>'


def _html_table(
    comparison: Comparison, header: list[str], rows: list[list[Any]], runs: list[Run] | None = None
) -> str:
    """A table; with one row per run (`runs` in row order, default the comparison's), the run's colour swatch
    beside its name."""
    runs = comparison.runs if runs is None else runs
    heads = []
    for column in header:
        mode = comparison.modes.get(column)
        hint = f' title="{"larger" if mode == "max" else "smaller"} is better"' if mode else ""
        # long names (callbacks.sample_grid.every_n_epochs) may wrap after a separator, not widen the table
        name = re.sub(r"([./])", r"\1<wbr>", _esc(_heading(column, comparison)))
        heads.append(f"<th{hint}>{name}</th>")
    lines = [f'<div class="scroll"><table><tr>{"".join(heads)}</tr>']
    for i, row in enumerate(rows):
        cells = []
        for value, column in zip(row, header):
            text = _esc(cell(value, column))
            if column == "run" and len(rows) == len(runs):
                text = _swatch(comparison.color(runs[i])) + text
            css = "num" if _numeric(column, comparison) else (text if column == "status" else "")
            cells.append(f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>")
        best = ' class="best"' if "status" in header and row[0] == 1 else ""
        lines.append(f"<tr{best}>{''.join(cells)}</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def _every_column(comparison: Comparison) -> str:
    """Per experiment, a table with every final metric its runs recorded and every config key that differs:
    what the table above leaves out when families differ in their recipes and in what they measure."""
    experiments: dict[str, list[Run]] = {}
    for run in comparison.runs:
        experiments.setdefault(str(run.experiment or "—"), []).append(run)
    left_out = []
    if comparison.hidden:
        left_out.append(f"{len(comparison.hidden)} metrics that not every completed run recorded")
    if comparison.recipe_keys:
        left_out.append(f"{len(comparison.recipe_keys)} config keys that differ only between experiments")
    parts = [
        f"<h2>every column, by experiment</h2>\n<p>{_esc(' and '.join(left_out))} are left out of the table "
        "above; here each experiment's runs with all of theirs.</p>"
    ]
    for experiment, runs in experiments.items():
        recorded = {name for run in runs for name in run.metrics}
        metrics = [name for name in comparison.all_metrics if name in recorded]
        header, rows = run_table(comparison, metrics, runs, comparison.all_keys)
        parts.append(
            f"<details><summary>{_esc(experiment)}: {_count(len(runs), 'run')}, {_count(len(metrics), 'metric')}</summary>\n"
            f"{_html_table(comparison, header, rows, runs)}</details>"
        )
    return "\n".join(parts)


def _samples(comparison: Comparison) -> str:
    """Each run's latest sample grids (samples/*.png) and text samples (the latest samples/*.txt), in table
    order, framed in the run's colour."""
    cards, shown = [], set()
    for run in comparison.runs:
        grids = sample_files(run)
        texts = sample_files(run, (".txt",))[-1:]
        if not grids and not texts:
            continue
        shown.add(run.name)
        rank = comparison.rank(run)
        title = f"#{rank} " if rank else ""
        title += f"{run.name} · {run.experiment or '—'} · {run.status}"
        items = []
        for path in grids:
            try:
                uri = _data_uri(path)
            except OSError:
                continue
            alt = _esc(f"{run.name}: {path.name}")
            items.append(
                f'<figure><img alt="{alt}" src="{uri}"><figcaption>{_esc(path.stem)}</figcaption></figure>'
            )
        for path in texts:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            lines = text.splitlines()
            more = f"\n… {len(lines) - 40} more lines in {path}" if len(lines) > 40 else ""
            items.append(
                f"<details><summary>{_esc(path.name)}</summary><pre>{_esc(chr(10).join(lines[:40]) + more)}</pre>"
                "</details>"
            )
        cards.append(
            f'<div class="run" style="border-top-color:{comparison.color(run)}"><h3>{_swatch(comparison.color(run))}'
            f"{_esc(title)}</h3>{''.join(items)}</div>"
        )
    if not cards:
        return ""
    without = [run.name for run in comparison.runs if run.name not in shown]
    missing = f"<p>no samples: {_esc(', '.join(without))}</p>\n" if without else ""
    return (
        '<h2>samples</h2>\n<p>the latest sample grids each run wrote (samples/)</p>\n<div class="runs">\n'
        + "\n".join(cards)
        + f"\n</div>\n{missing}"
    )
