"""Console lines from Lightning and torch that say nothing about the run, silenced when `genlab` starts."""

from __future__ import annotations

import logging
import warnings


class _NoAdverts(logging.Filter):
    """Lightning logs an advert for its hosted logger (litlogger) at every Trainer start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_NO_ADVERTS = _NoAdverts()


def silence_known_noise() -> None:
    # Lightning 2.6's _pytree helper still tests `isinstance(spec, LeafSpec)`, deprecated by torch 2.10:
    # one warning per fit that names no genlab code and nothing a user can change
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NO_ADVERTS)  # idempotent
