"""Where the config tree lives, and checks on a composed config that Hydra itself does not make."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError

# True while a `genlab` command composes its config: only then does genlab's search-path plugin
# (hydra_plugins/genlab_searchpath) add the configs below, never to another Hydra app in the same environment
composing = False
# whether `genlab_fresh_dir` creates the folder it names: not when the command only prints (`--cfg`, `--help`)
claim_dirs = True


def fresh_dir(path: str) -> str:
    """`path`, created now; when it exists already (two runs started in the same second get the same time-stamped
    name), the first of `path-2`, `path-3`, ... that did not: a new run never writes into another run's folder.
    The run dir of `genlab train` is `${genlab_fresh_dir:outputs/train/runs/<time>_<experiment>}`, its sweep
    dir `${genlab_fresh_dir:outputs/train/multirun/<time>}`. With `claim_dirs` off, the name alone."""
    base = Path(path)
    for n in itertools.count(1):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not claim_dirs:
            if not candidate.exists():
                return str(candidate)
            continue
        try:
            candidate.mkdir(parents=True)  # atomic: of two runs asking at once, one gets it
            return str(candidate)
        except FileExistsError:
            continue


if not OmegaConf.has_resolver("genlab_fresh_dir"):
    # cached like Hydra's `now`: a sweep's jobs (whose configs Hydra recomposes, then hands the master config's
    # resolver cache) and the Optuna storage under the sweep dir all see the one folder claimed first
    OmegaConf.register_new_resolver("genlab_fresh_dir", fresh_dir, use_cache=True)


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


def user_config_dir() -> Path:
    """The user's own config folder, searched after the packaged configs by every `genlab` command:
    $GENLAB_CONFIG_DIR, else $XDG_CONFIG_HOME/genlab (~/.config/genlab). Its `local/default.yaml` is applied
    to every run (personal overrides); its other files add options (e.g. `experiment/mine.yaml`)."""
    if os.environ.get("GENLAB_CONFIG_DIR"):
        return Path(os.environ["GENLAB_CONFIG_DIR"]).expanduser().absolute()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser().absolute() / "genlab"


def search_path() -> list[str]:
    """What a `genlab` command adds to Hydra's config search path: the packaged configs (so that a user's own
    primary config, `-cp DIR -cn NAME`, can list `train` in its defaults) and the user's config folder."""
    entries = [f"file://{conf_dir()}"]
    if user_config_dir().is_dir():
        entries.append(f"file://{user_config_dir()}")
    return entries


def check_mandatory(cfg: DictConfig) -> None:
    """Fail at start, not at first use, when a `???` value was left unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        first = missing[0]
        raise ConfigError(
            f"missing mandatory value{'s' if len(missing) > 1 else ''}: {', '.join(missing)}; "
            f"set it on the command line, e.g. {first}=..."
        )


def command_options(
    command: str, argv: list[str], raw_strings: tuple[str, ...] = ()
) -> tuple[DictConfig, list[str], set[str]]:
    """The options of a `genlab <command> key=value ...` that reads a run (sample, serve, quantize, export):
    (conf/<command>.yaml merged with the args that name its keys, the other args as overrides of the run's
    config, the option names given). `raw_strings` keep their text as typed (paths, prompts)."""
    options = OmegaConf.load(conf_dir() / f"{command}.yaml")
    given, run_overrides, names = [], [], set()
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            raise ConfigError(
                f"unexpected argument {arg!r}: genlab {command} takes key=value pairs, e.g. run=DIR"
            )
        key, value = arg.split("=", 1)
        if key.split(".", 1)[0] in options:
            given.append({key: value} if key in raw_strings else OmegaConf.from_dotlist([arg]))
            names.add(key)
        else:
            run_overrides.append(arg)
    options = OmegaConf.merge(options, *given)
    if bool(options.ckpt) == bool(options.run):
        raise ConfigError("give exactly one of run=RUN_DIR (a run directory) or ckpt=PATH (a checkpoint)")
    return options, run_overrides, names
