"""Shell completion of `genlab`: its commands, then each Hydra command's config groups, options and keys.

`eval "$(genlab train -sc install=bash)"` registers `_genlab_completion` for the `genlab` command; on each
<Tab> the shell runs `genlab -sc query=bash`, and the options come from Hydra's own completion of the
command's config. (Hydra's script would register `python`: genlab's commands re-run as scripts.)
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Mapping

SHELLS = ("bash", "zsh")  # zsh runs the bash script through bashcompinit
FLAG_VALUES = {"--cfg": ["job", "hydra", "all"], "-c": ["job", "hydra", "all"]}
HYDRA_FLAGS = ["--multirun", "--cfg", "--resolve", "--package", "--info", "--config-dir", "--config-name"]

_SCRIPT = """\
# genlab shell completion: `eval "$(genlab -sc install=bash)"`, e.g. in ~/.bashrc
_genlab_completion()
{
    local IFS=$'\\n'
    # genlab splits the line itself; the shell's word breaks (= and :) say what each reply replaces
    COMPREPLY=($(COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" COMP_WORDBREAKS="${COMP_WORDBREAKS-}" \\
        "${COMP_WORDS[@]:0:1}" -sc query=bash 2>/dev/null))
    # a group or key (`model=`, `optimizer.`) is half an override: no space after it
    if [[ ${#COMPREPLY[@]} == 1 && "${COMPREPLY[*]}" == *[=./] ]] && type compopt &>/dev/null; then
        compopt -o nospace 2>/dev/null
    fi
}
complete -o default -F _genlab_completion genlab
"""
_UNINSTALL = "complete -r genlab 2>/dev/null; unset -f _genlab_completion\n"


def main(argv: list[str], commands: Mapping[str, Callable[[list[str]], None]]) -> None:
    """`genlab [command] -sc install=bash | uninstall=bash | query=bash`."""
    action, shell = _action(argv)
    if shell not in SHELLS:
        print(f"error: genlab completes in {' and '.join(SHELLS)}, not {shell!r}", file=sys.stderr)
        raise SystemExit(2)
    if action == "install" and shell == "zsh":  # no compopt in zsh's bash emulation: never a space after
        print(
            "autoload -U +X bashcompinit && bashcompinit\n"
            + _SCRIPT.replace("-o default", "-o nospace -o default"),
            end="",
        )
    elif action == "install":
        print(_SCRIPT, end="")
    elif action == "uninstall":
        print(_UNINSTALL, end="")
    else:
        line = os.environ.get("COMP_LINE", "")
        point = int(os.environ.get("COMP_POINT") or len(line))
        for reply in query(line[:point], commands, os.environ.get("COMP_WORDBREAKS", "")):
            print(reply)


def _action(argv: list[str]) -> tuple[str, str]:
    index = next(i for i, arg in enumerate(argv) if arg in ("-sc", "--shell-completion"))
    action, _, shell = (argv[index + 1] if index + 1 < len(argv) else "").partition("=")
    if action not in ("install", "uninstall", "query"):
        print("error: -sc takes install=bash, uninstall=bash or query=bash", file=sys.stderr)
        raise SystemExit(2)
    return action, shell


def query(line: str, commands: Mapping[str, Callable[[list[str]], None]], wordbreaks: str = "") -> list[str]:
    """The replies for the line up to the cursor, each cut to the part the shell replaces.

    Bash replaces only the text after the last of its word-break characters (`model=dc` -> `dc`).
    """
    words = line.split()
    current = "" if not line or line[-1].isspace() else words.pop()
    if len(words) <= 1:
        candidates = list(commands)
    elif current.startswith("-"):
        candidates = HYDRA_FLAGS if _config_name(commands, words[1]) else []
    elif words[-1] in FLAG_VALUES:
        candidates = FLAG_VALUES[words[-1]]
    elif (config_name := _config_name(commands, words[1])) is not None:
        candidates = _hydra_candidates(commands[words[1]], config_name, words[2:], current)
    else:
        candidates = []  # the shell completes file names (`-o default`)
    cut = max((current.rfind(char) for char in wordbreaks), default=-1) + 1
    return sorted({c[cut:] for c in candidates if c.startswith(current)})


def _config_name(commands: Mapping[str, Callable[[list[str]], None]], name: str) -> str | None:
    return getattr(commands.get(name), "config_name", None)


def _hydra_candidates(
    command: Callable[[list[str]], None], config_name: str, words: list[str], current: str
) -> list[str]:
    """Hydra's completion of `current` after `words`, on the config the command would compose."""
    from genlab.config import conf_dir
    from genlab.overrides import prepare

    sources, overrides = _split_sources(words)
    # the overrides the command would run with (the default recipe, `group=null`)
    overrides = _split_sources(prepare(config_name, [*sources, *overrides], conf_dir()))[1]
    # Hydra's query reads the line from COMP_LINE and drops its first word (the program)
    saved = os.environ.get("COMP_LINE")
    os.environ["COMP_LINE"] = " ".join(["genlab", *overrides, current])
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            command([*sources, "-sc", "query=bash"])
    except (Exception, SystemExit):  # a line Hydra cannot parse has no completions
        return []
    finally:
        if saved is None:
            os.environ.pop("COMP_LINE", None)
        else:
            os.environ["COMP_LINE"] = saved
    return out.getvalue().split()


def _split_sources(words: list[str]) -> tuple[list[str], list[str]]:
    """(the flags choosing the config tree and primary config, with their values), (everything else)."""
    sources, rest = [], []
    args = iter(words)
    for word in args:
        if word in ("-cd", "--config-dir", "-cn", "--config-name"):
            sources += [word, next(args, "")]
        else:
            rest.append(word)
    return sources, rest
