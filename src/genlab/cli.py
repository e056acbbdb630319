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
  compare     table and plots of run directories    genlab compare outputs/train/multirun/<time> --by model._target_
  reproduce   re-run a finished run, check metrics  genlab reproduce outputs/train/runs/<run> [--tolerance REL]

Run `genlab <command> --help` for the command's own help.
"""


def _hydra_command(config_name: str, task: str) -> Callable[[list[str]], None]:
    """A command that runs `genlab.<task>.main` under Hydra with the packaged config `config_name`."""

    def command(argv: list[str]) -> None:
        import hydra

        from genlab.config import conf_dir

        if not _is_relaunched_rank():
            _refuse_existing_run_dir(argv)
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

    return command


def _is_relaunched_rank() -> bool:
    """True in the processes a distributed launcher started for ranks > 0 (they share rank 0's run dir)."""
    return any(os.environ.get(var, "0") != "0" for var in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def _refuse_existing_run_dir(argv: list[str]) -> None:
    """An explicit `hydra.run.dir` holding a finished or running run would have its config overwritten;
    one that cannot be created would fail inside Hydra with a traceback. `resume=auto` continues the run there."""
    continuing = any(arg in ("resume=auto", "resume=auto_or_new") for arg in argv)
    for arg in argv:
        if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")):
            _refuse_unwritable_dir(Path(arg.split("=", 1)[1]), arg.split("=", 1)[0])
        if arg.startswith("hydra.run.dir=") and not continuing:
            run_dir = Path(arg.split("=", 1)[1])
            if (run_dir / "run.json").exists():
                print(
                    f"error: {run_dir} already holds a run (run.json); choose a new hydra.run.dir, leave it "
                    "out for a fresh time-stamped folder, or add resume=auto to continue that run",
                    file=sys.stderr,
                )
                raise SystemExit(2)


def _refuse_unwritable_dir(path: Path, key: str) -> None:
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not a folder" if not existing.is_dir() else "is not writable"
        print(
            f"error: {key}={path} cannot be created: {existing} {what}; choose another {key}", file=sys.stderr
        )
        raise SystemExit(2)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "train": _hydra_command("train", "train"),
    "eval": lambda argv: __import__("genlab.evaluate", fromlist=["main"]).main(argv),
    "compare": lambda argv: __import__("genlab.runs.compare", fromlist=["main"]).main(argv),
    "reproduce": lambda argv: __import__("genlab.runs.reproduce", fromlist=["main"]).main(argv),
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
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    COMMANDS[name](rest)


if __name__ == "__main__":
    main()
