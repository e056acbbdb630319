"""What the `genlab` command adds to or rewrites in the overrides before Hydra reads them.

Two rules: `genlab train` with no recipe and no model or data choice runs the default recipe, and
`group=null` chooses no option of a group (Hydra itself fails on it with a traceback).
"""

from __future__ import annotations

from pathlib import Path

# the recipe of a bare `genlab train`; conf/train.yaml itself composes none, so that `model=dcgan` alone
# trains the DCGAN with its own config instead of inheriting the VAE recipe's name, tags and learning rate
DEFAULT_EXPERIMENT = "mnist_vae"
# choosing one of these on the command line means the user composes the run: no default recipe then
# (an `hparams_search` config names its own experiment)
RECIPE_GROUPS = ("experiment", "hparams_search", "model", "data")
_CONFIG_NAME_FLAGS = ("-cn", "--config-name")
_CONFIG_DIR_FLAGS = ("-cd", "--config-dir")


def prepare(config_name: str, argv: list[str], conf: Path) -> list[str]:
    """`argv` as Hydra should see it: `group=null` as `~group`, and the default recipe where one applies."""
    groups = _groups(argv, conf)
    argv = [f"~{arg[: -len('=null')]}" if _is_null_choice(arg, groups) else arg for arg in argv]
    composed_here = config_name == "train" and not _flag_given(argv, _CONFIG_NAME_FLAGS)
    if composed_here and not any(_chosen_group(arg) in RECIPE_GROUPS for arg in argv):
        # beside the other overrides: Hydra's parser takes them as one run of positional arguments
        at = next((i for i, arg in enumerate(argv) if _chosen_group(arg) is not None), 0)
        argv = [*argv[:at], f"experiment={DEFAULT_EXPERIMENT}", *argv[at:]]
    return argv


def _chosen_group(arg: str) -> str | None:
    """The group (or key) an override sets: `model=dcgan` -> model, `~experiment` -> experiment."""
    if arg.startswith("-"):
        return None
    if "=" in arg:
        key = arg.split("=", 1)[0]
    elif arg.startswith("~"):
        key = arg
    else:
        return None  # the value of a flag (`--cfg job`, `-p model`)
    return key.lstrip("+~").split("@", 1)[0]


def _is_null_choice(arg: str, groups: set[str]) -> bool:
    return arg.endswith("=null") and not arg.startswith(("+", "~")) and arg[: -len("=null")] in groups


def _groups(argv: list[str], conf: Path) -> set[str]:
    """Config groups (folders) of the packaged tree and of any `--config-dir` on the command line."""
    roots = [conf, *(Path(d) for d in _flag_values(argv, _CONFIG_DIR_FLAGS))]
    groups = set()
    for root in roots:
        if root.is_dir():
            groups |= {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()}
    return groups


def _flag_values(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        if arg in flags and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(tuple(f"{flag}=" for flag in flags)):
            values.append(arg.split("=", 1)[1])
    return values


def _flag_given(argv: list[str], flags: tuple[str, ...]) -> bool:
    return any(arg in flags or arg.startswith(tuple(f"{flag}=" for flag in flags)) for arg in argv)
