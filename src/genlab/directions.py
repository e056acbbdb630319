"""Which way is better for each metric, as declared by the families and callbacks that log it (`metric_modes`).

A declaration maps a metric name to "max" or "min"; a key ending in "/" covers every metric under that prefix
(`"is/": "max"` for `is/classifier-mnist5k/1000`). A metric no one declares is loss-like: best when smallest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MODES = ("min", "max")


def declared(sources: Iterable[Any]) -> dict[str, str]:
    """The `metric_modes` of every source (a module, its callbacks), merged; a contradiction is a bug in genlab."""
    out: dict[str, str] = {}
    for source in sources:
        for name, mode in (getattr(source, "metric_modes", None) or {}).items():
            if mode not in MODES:
                raise ValueError(
                    f"{type(source).__name__}.metric_modes[{name!r}] = {mode!r}: use 'min' or 'max'"
                )
            if out.setdefault(name, mode) != mode:
                raise ValueError(f"{name!r} is declared both 'min' and 'max' ({type(source).__name__})")
    return out


def declared_mode(name: str, declarations: dict[str, str]) -> str | None:
    """The declared mode of `name` (exact name first, then the longest matching prefix), or None."""
    if name in declarations:
        return declarations[name]
    prefixes = [key for key in declarations if key.endswith("/") and name.startswith(key)]
    return declarations[max(prefixes, key=len)] if prefixes else None


def metric_modes(names: Iterable[str], declarations: dict[str, str]) -> dict[str, str]:
    """Every name's mode, "min" where undeclared: what run.json records for `genlab compare`."""
    return {name: declared_mode(name, declarations) or "min" for name in names}
