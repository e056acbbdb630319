"""Where a sweep's Optuna study lives, from one URL: a database Optuna reaches through SQLAlchemy, or a journal file.

`sqlite:///<path>` (the default, in the sweep dir), `postgresql://user@host:5432/db` or `mysql://...` are
Optuna's own RDB URLs. `journal:///<path>` (a path written as in sqlite URLs: `journal:////abs/file.log` is
absolute) is Optuna's append-only JournalStorage on a file: safe for many processes, on many machines
sharing a filesystem, where a SQLite file is not, and needs no database server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError

JOURNAL = "journal:///"


def open_storage(url: str | None) -> Any:
    """What `optuna.create_study(storage=...)` takes for `url`: the URL itself for a database, a
    JournalStorage for a journal file, None (in memory) for None."""
    if url is None or not str(url).startswith("journal:"):
        return url
    if not str(url).startswith(JOURNAL) or len(str(url)) == len(JOURNAL):
        raise ConfigError(
            f"hydra.sweeper.storage={url}: a journal file is written journal:///<path> "
            "(journal:////abs/path/optuna.log for an absolute path)"
        )
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(str(url)[len(JOURNAL) :])
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def describe(url: str | None) -> str:
    """The URL for a log line, its password (if one was written in it) replaced by ***."""
    if url is None:
        return "memory"
    return re.sub(r"^([a-z0-9+.-]+://[^/:@]*):[^/@]*@", r"\1:***@", str(url), flags=re.IGNORECASE)
