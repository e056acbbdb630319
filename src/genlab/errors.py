"""User-facing errors: the CLI prints their message as one line (no traceback) and exits non-zero."""


class GenlabError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class DataError(GenlabError):
    """Missing, empty, unreadable or malformed data."""


class ConfigError(GenlabError):
    """A config value that composes but cannot work (wrong shape, incompatible options)."""


class CheckpointError(GenlabError):
    """A checkpoint that is missing, truncated, or from another family."""
