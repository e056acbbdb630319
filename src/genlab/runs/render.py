"""The comparison as text: a rich terminal table, Markdown, CSV, or one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html as html_lib
import io
import math
import sys
from pathlib import Path
from typing import Any

from genlab.runs.compare import Comparison, format_value
from genlab.runs.rundirs import MISSING, Run

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "corrupt": "magenta",
}


def run_table(comparison: Comparison) -> tuple[list[str], list[list[Any]]]:
    """Header and raw cell values, one row per run, best first."""
    keys = list(comparison.keys)
    if comparison.by and comparison.by not in keys and comparison.by not in ("experiment", "status"):
        keys.insert(0, comparison.by)  # experiment and status have their own columns
    # where fine-tuned runs' weights came from, when any was: right after what they are
    source = ["init_from"] if comparison.sources else []
    header = ["#", "run", "experiment", *source, *keys, "status", "steps", "wall_time_s", *comparison.metrics]
    rows = []
    for run in comparison.runs:
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
                *[run.metrics.get(metric) for metric in comparison.metrics],
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
        or column in comparison.metrics
        or (column.startswith(f"{comparison.metric} "))
    )


def _title(comparison: Comparison) -> str:
    ranked = len(comparison.ranks)
    return (
        f"{len(comparison.runs)} runs, {ranked} ranked by {comparison.metric} ({comparison.mode}; "
        "completed runs only), best first"
    )


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
            name = "wall time" if column == "wall_time_s" else column
            table.add_column(
                name, justify="right" if _numeric(column, comparison) else "left", overflow="fold"
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
    header, rows = run_table(comparison)
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
    """A self-contained page: the tables, then every PNG embedded as a data URI."""
    sections = [f"<h1>genlab compare</h1>\n<p>{html_lib.escape(_title(comparison))}</p>"]
    sections.append(_html_table(comparison, *run_table(comparison)))
    if comparison.groups:
        sections.append(f"<h2>by {html_lib.escape(str(comparison.by))}</h2>")
        sections.append(_html_table(comparison, *group_table(comparison)))
    for image in images:
        data = base64.b64encode(Path(image).read_bytes()).decode("ascii")
        name = html_lib.escape(Path(image).stem)
        sections.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3}td.num{text-align:right}"
        "tr.best{font-weight:bold}.completed{color:#11772d}.failed{color:#b00}.interrupted{color:#a60}"
        ".running{color:#07a}.corrupt{color:#a0a}figure{display:inline-block;margin:0 1em 1em 0}"
        "img{max-width:100%}"
    )
    body = "\n".join(sections)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>genlab compare</title>'
        f"<style>{style}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _html_table(comparison: Comparison, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html_lib.escape('wall time' if c == 'wall_time_s' else c)}</th>" for c in header)
    lines = [f"<table><tr>{head}</tr>"]
    for row in rows:
        cells = []
        for value, column in zip(row, header):
            text = html_lib.escape(cell(value, column))
            css = "num" if _numeric(column, comparison) else (text if column == "status" else "")
            cells.append(f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>")
        best = ' class="best"' if "status" in header and row[0] == 1 else ""
        lines.append(f"<tr{best}>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)
