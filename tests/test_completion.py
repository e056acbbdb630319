"""`eval "$(genlab train -sc install=bash)"` makes <Tab> complete genlab's commands and config options in bash."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_genlab


def test_install_script_registers_genlab_not_python():
    result = run_genlab("train", "-sc", "install=bash")
    assert result.returncode == 0, result.stderr
    registration = result.stdout.strip().splitlines()[-1]
    assert registration.startswith("complete ") and registration.split()[-1] == "genlab", registration
    assert "python" not in result.stdout


# (the line typed so far, the words bash splits it into, what <Tab> offers)
CASES = [
    ("genlab tr", "genlab tr", "train"),
    ("genlab train model=dc", "genlab train model = dc", "dcgan"),  # bash replaces only the text after `=`
    ("genlab train debug=", "genlab train debug =", "fast fdr limit overfit profiler"),
    (
        "genlab train callbacks=",
        "genlab train callbacks =",
        "default early_stopping fid fid_if_available none pruning",
    ),
    ("genlab train optimizer.l", "genlab train optimizer.l", "optimizer.lr="),
    ("genlab train --cfg ", "genlab train --cfg", "all hydra job"),
]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_groups_options_and_keys():
    # `genlab` here is this checkout's CLI; bash runs the installed function as <Tab> would
    script = [
        f'genlab() {{ "{sys.executable}" -m genlab.cli "$@"; }}',
        'eval "$(genlab train -sc install=bash)"',
    ]
    for line, words, _ in CASES:
        script += [
            f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({words}); '
            "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); "
            '[[ $COMP_LINE == *" " ]] && { COMP_WORDS+=(""); COMP_CWORD=$((COMP_CWORD + 1)); }; ',
            'COMPREPLY=(); _genlab_completion; echo "${COMPREPLY[*]}"',
        ]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    replies = result.stdout.splitlines()
    assert replies == [expected for *_, expected in CASES], result.stderr[-2000:]


def test_unknown_shell_is_one_line():
    result = run_genlab("train", "-sc", "install=tcsh")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
