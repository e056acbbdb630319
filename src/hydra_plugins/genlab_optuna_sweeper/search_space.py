"""Hydra sweep syntax (`interval`, `tag(log, ...)`, `choice`, `range`) to Optuna distributions, and back to overrides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


def parse_search_space(
    params: dict[str, Any], arguments: list[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split the sweeper's `params` and the command line into a search space and the overrides every trial gets.

    The command line comes last and wins: `optimizer.lr=1e-3` fixes a key that `params` would search.
    """
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = to_distribution(override)
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())


def to_distribution(override: Override) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):  # `int(interval(a, b))`
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{key}: {override.input_line} is an empty range")
        if all(isinstance(v, int) for v in values) and isinstance(value.step, int) and value.step > 0:
            return IntDistribution(values[0], values[-1], step=value.step)
        return CategoricalDistribution(values)
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    raise ValueError(
        f"{key}: {override.input_line} is not a sweep Optuna can sample (use interval, choice or range)"
    )


def to_override(key: str, value: Any) -> str:
    """One trial's value as a command-line override Hydra parses back to the same value."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        text = str(value)
    return f"{key}={text}"
