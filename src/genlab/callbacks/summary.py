"""The model summary at the start of fit, as Lightning's but without a FLOPs column of zeros.

Lightning counts FLOPs only for modules that set `example_input_array`; genlab's take their inputs from the
datamodule, so its column and its total would always read 0.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

log = logging.getLogger(__name__)


class ModelSummary(LightningModelSummary):
    """Each top-level module's name, type, parameter count and mode, then the totals; logged (train.log too)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        log.info(
            "model:\n"
            + summary_table(summary_data, total_parameters, trainable_parameters, model_size, total_flops)
        )


def summary_table(
    columns: list[tuple[str, list[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_flops: int = 0,
) -> str:
    """Lightning's summary columns as a text table (FLOPs only when counted), and a line of totals."""
    columns = [(name, values) for name, values in columns if name != "FLOPs" or total_flops]
    widths = [max([len(name), *map(len, values)]) for name, values in columns]
    lines = [" | ".join(name.ljust(width) for (name, _), width in zip(columns, widths))]
    lines.append("-" * len(lines[0]))
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in zip(*(v for _, v in columns))]
    count = _count
    totals = (
        f"{count(trainable_parameters)} trainable + {count(total_parameters - trainable_parameters)} frozen "
        f"= {count(total_parameters)} parameters, {get_formatted_model_size(model_size)} MB"
    )
    if total_flops:
        totals += f", {count(total_flops)} FLOPs"
    return "\n".join([*(line.rstrip() for line in lines), totals])


def _count(n: int) -> str:
    return get_human_readable_count(n).strip()  # "15  " -> "15", "1.7 M"
