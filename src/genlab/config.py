"""Where the config tree lives, and checks on a composed config that Hydra itself does not make."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError


def conf_dir() -> Path:
    """The packaged config tree: genlab/conf inside a wheel, or conf/ at the root of a source checkout."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if checkout.is_dir():
        return checkout
    raise ConfigError(
        f"genlab's config tree is missing (looked in {packaged} and {checkout}); reinstall genlab"
    )


def check_mandatory(cfg: DictConfig) -> None:
    """Fail at start, not at first use, when a `???` value was left unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        first = missing[0]
        raise ConfigError(
            f"missing mandatory value{'s' if len(missing) > 1 else ''}: {', '.join(missing)}; "
            f"set it on the command line, e.g. {first}=..."
        )
