"""The `genlab` command: dispatches `genlab <command> [args]` to a Hydra entry point or a plain command.

Only this file is imported by `genlab --help`; each command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

USAGE = """\
usage: genlab <command> [hydra overrides | options]

commands:
  train       train a model from composed configs   genlab train experiment=mnist_vae trainer.max_epochs=5
              (Hydra: -m/--multirun for sweeps, --cfg job to print the config, --help for groups and options)
  eval        evaluate a checkpoint (metrics JSON)  genlab eval ckpt=outputs/train/runs/<run>/checkpoints/last.ckpt
  sample      images, interpolations or text        genlab sample run=outputs/train/runs/<run> n=64 seed=0
  compare     table and plots of run directories    genlab compare outputs/train/multirun/<time> --by model._target_
  reproduce   re-run a finished run, check metrics  genlab reproduce outputs/train/runs/<run> [--tolerance REL]
  serve       a run over HTTP (LitServe)            genlab serve run=outputs/train/runs/<run> port=8000
  quantize    a smaller copy of a run (int8, fp16)  genlab quantize run=outputs/train/runs/<run> method=dynamic_int8
  export      a run's network as ONNX               genlab export run=outputs/train/runs/<run> format=onnx

Run `genlab <command> --help` for the command's own help.
"""


# Hydra's flags that print instead of running a job
HYDRA_PRINT_FLAGS = {
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--help",
    "-h",
    "--hydra-help",
    "--shell-completion",
    "-sc",
}


def _hydra_command(config_name: str, task: str) -> Callable[[list[str]], None]:
    """A command that runs `genlab.<task>.main` under Hydra with the packaged config `config_name`."""

    def command(argv: list[str]) -> None:
        import hydra

        from genlab import config
        from genlab.config import conf_dir
        from genlab.overrides import prepare

        config.composing = True  # genlab's search-path plugin: packaged configs + the user's config folder
        # a command that only prints the config or help leaves no run or sweep folder behind
        config.claim_dirs = not any(a.split("=", 1)[0] in HYDRA_PRINT_FLAGS for a in argv)
        argv = _absolute_config_dirs(argv)
        argv = prepare(config_name, argv, conf_dir())  # the default recipe; `group=null` as `~group`
        if not _is_relaunched_rank():
            argv = _refuse_existing_run_dir(argv)
        module = __import__(f"genlab.{task}", fromlist=["main"])
        entry = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(
            module.main
        )
        # Lightning's DDP launcher re-runs sys.argv (or `python -m <__main__'s module>`) for ranks > 0:
        # make that the re-runnable script of this command
        import __main__

        __main__.__spec__ = None
        sys.argv = [str(Path(__file__).parent / "scripts" / f"genlab_{task}.py"), *argv]
        entry()

    command.config_name = config_name  # genlab.completion asks Hydra to complete this config
    return command


_CONFIG_DIR_FLAGS = ("-cp", "--config-path", "-cd", "--config-dir")


def _absolute_config_dirs(argv: list[str]) -> list[str]:
    """`-cp`/`-cd` folders as absolute paths: Hydra would read a relative `-cp` from inside the installed
    genlab package, and run.json's command and the resume command must work from any folder."""
    out, take = [], False
    for arg in argv:
        if take:
            out.append(_absolute(arg))
            take = False
            continue
        flag, eq, value = arg.partition("=")
        if arg in _CONFIG_DIR_FLAGS:
            take = True
        elif eq and flag in _CONFIG_DIR_FLAGS:
            arg = f"{flag}={_absolute(value)}"
        out.append(arg)
    return out


def _absolute(path: str) -> str:
    return path if not path or "://" in path else os.path.abspath(path)  # `pkg://...` stays as it is


def _is_relaunched_rank() -> bool:
    """True in the processes a distributed launcher started for ranks > 0 (they share rank 0's run dir)."""
    return any(os.environ.get(var, "0") != "0" for var in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def _refuse_existing_run_dir(argv: list[str]) -> list[str]:
    """An explicit `hydra.run.dir` holding a finished or running run would have its config overwritten;
    one that cannot be created would fail inside Hydra with a traceback. `resume=auto` continues the run
    there: its composed config then goes to `.hydra/resume-<time>/`, so the run's own `.hydra/` stays as it
    was (and stays as it was if the resume fails). Returns argv, with that `hydra.output_subdir` added."""
    continuing = any(arg in ("resume=auto", "resume=auto_or_new") for arg in argv)
    extra = []
    for arg in argv:
        if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")):
            _refuse_unwritable_dir(Path(arg.split("=", 1)[1]), arg.split("=", 1)[0])
        if arg.startswith("hydra.run.dir=") and (Path(arg.split("=", 1)[1]) / "run.json").exists():
            if not continuing:
                print(
                    f"error: {arg.split('=', 1)[1]} already holds a run (run.json); choose a new hydra.run.dir, "
                    "leave it out for a fresh time-stamped folder, or add resume=auto to continue that run",
                    file=sys.stderr,
                )
                raise SystemExit(2)
            if not any(a.startswith("hydra.output_subdir=") for a in argv):
                from datetime import datetime

                extra.append(f"hydra.output_subdir=.hydra/resume-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}")
    return [*argv, *extra]


def _refuse_unwritable_dir(path: Path, key: str) -> None:
    """Create the folder (and what is missing above it) to learn whether it can be; what was created for the
    test is removed again, so `--cfg job` leaves nothing behind. (Asking `os.access` is not enough: root is
    told yes for /proc.)"""
    missing = []
    existing = path.absolute()
    while not existing.exists():
        missing.append(existing)
        existing = existing.parent
    if existing.is_dir() and not missing:
        if os.access(existing, os.W_OK | os.X_OK):
            return
        reason = f"{existing} is not writable"
    elif not existing.is_dir():
        reason = f"{existing} is not a folder"
    else:
        try:
            path.absolute().mkdir(parents=True)
        except OSError as error:
            reason = f"{error.strerror or error}"
        else:
            for created in missing:  # deepest first
                created.rmdir()
            return
    print(f"error: {key}={path} cannot be created: {reason}; choose another {key}", file=sys.stderr)
    raise SystemExit(2)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "train": _hydra_command("train", "train"),
    "eval": lambda argv: __import__("genlab.evaluate", fromlist=["main"]).main(argv),
    "sample": lambda argv: __import__("genlab.sample", fromlist=["main"]).main(argv),
    "compare": lambda argv: __import__("genlab.runs.compare", fromlist=["main"]).main(argv),
    "reproduce": lambda argv: __import__("genlab.runs.reproduce", fromlist=["main"]).main(argv),
    "serve": lambda argv: __import__("genlab.serve", fromlist=["main"]).main(argv),
    "quantize": lambda argv: __import__("genlab.quantize", fromlist=["main"]).main(argv),
    "export": lambda argv: __import__("genlab.export", fromlist=["main"]).main(argv),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    if argv[0] in ("-V", "--version"):
        from genlab import __version__

        print(f"genlab {__version__}")
        return
    if any(arg in ("-sc", "--shell-completion") for arg in argv):  # `genlab [train] -sc install=bash`
        from genlab import completion

        completion.main(argv, COMMANDS)
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    from genlab.quiet import silence_known_noise

    silence_known_noise()  # Lightning's litlogger advert, a torch deprecation inside Lightning
    try:
        COMMANDS[name](rest)
    except BrokenPipeError:  # `genlab eval --help | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None


if __name__ == "__main__":
    main()
