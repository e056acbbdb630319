"""User-facing errors: the CLI prints their message as one line (no traceback) and exits non-zero."""

from __future__ import annotations


class GenlabError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class DataError(GenlabError):
    """Missing, empty, unreadable or malformed data."""


class ConfigError(GenlabError):
    """A config value that composes but cannot work (wrong shape, incompatible options)."""


class CheckpointError(GenlabError):
    """A checkpoint that is missing, truncated, or from another family."""


def user_error(error: BaseException) -> GenlabError | None:
    """Known failures caused by the user's input, as one-line errors; None for anything else (a bug).

    Hydra wraps errors of the objects it builds (a net refusing an image size, Lightning refusing
    `trainer.devices`) in an InstantiationException; OmegaConf reports a broken interpolation.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, GenlabError):
            return cause
        cause = cause.__cause__
    import sys

    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    lightning_errors = sys.modules.get("lightning.fabric.utilities.exceptions")  # loaded if Lightning ran
    misconfiguration = getattr(lightning_errors, "MisconfigurationException", OmegaConfBaseException)
    hint = "(HYDRA_FULL_ERROR=1 shows the traceback)"
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, misconfiguration):
        error = error.__cause__
    elif isinstance(error, InstantiationException) and isinstance(error.__cause__, (TypeError, ValueError)):
        # a constructor refusing a value (`model.net.latent_dim=abc`): Hydra's last line names the key
        lines = str(error).splitlines()
        key = lines[-1].removeprefix("full_key: ") if lines[-1].startswith("full_key: ") else "config"
        cause = error.__cause__
        return ConfigError(f"{key}: {lines[0].rstrip(':')}: {type(cause).__name__}: {cause} {hint}")
    if isinstance(error, FloatingPointError):  # a module's own divergence check (the GAN's)
        from genlab.callbacks.guards import NonFiniteLossError

        return NonFiniteLossError(str(error))
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        text = str(error).strip().splitlines()[0]  # the rest repeats full_key and the node type
        return ConfigError(f"{key + ': ' if key else ''}{text}; choose options that fit together {hint}")
    if isinstance(error, misconfiguration):
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        about_devices = any(
            word in text.lower() for word in ("device", "accelerator", "gpu", "cuda", "strategy")
        )
        fix = (
            "check trainer.accelerator and trainer.devices" if about_devices else "check the trainer options"
        )
        return ConfigError(f"{text}; {fix} {hint}")
    return None
