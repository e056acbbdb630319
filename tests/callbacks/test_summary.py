"""The model summary leaves out Lightning's FLOPs column and total when nothing was counted."""

from __future__ import annotations

from genlab.callbacks.summary import summary_table

# what Lightning 2.6's ModelSummary.on_fit_start hands to `summarize` for a module without example input
COLUMNS = [
    (" ", ["0", "1"]),
    ("Name", ["net", "frozen"]),
    ("Type", ["Linear", "Linear"]),
    ("Params", ["15", "8"]),
    ("Mode", ["train", "train"]),
    ("FLOPs", ["0", "0"]),
]


def test_no_flops_column_or_total_when_none_were_counted():
    table = summary_table(COLUMNS, total_parameters=23, trainable_parameters=15, model_size=9.2e-5)
    lines = table.splitlines()
    assert "FLOPs" not in table
    assert lines[0] == "  | Name   | Type   | Params | Mode"
    assert lines[2] == "0 | net    | Linear | 15     | train"
    assert lines[-1] == "15 trainable + 8 frozen = 23 parameters, 0.000 MB"


def test_counted_flops_are_kept():
    flops = [(name, values if name != "FLOPs" else ["120", "48"]) for name, values in COLUMNS]
    table = summary_table(
        flops, total_parameters=23, trainable_parameters=15, model_size=0.0, total_flops=168
    )
    assert table.splitlines()[0].endswith("| FLOPs") and table.endswith(", 168 FLOPs")
