"""`genlab train experiment=shakespeare_gpt` against a plain PyTorch loop of genlab's own GPT net: loss and wall.

    python benchmarks/nanogpt_parity.py                 # 300 steps of the recipe (~2 min on 2 cores)
    python benchmarks/nanogpt_parity.py --full          # the recipe's 2,000 iterations (~15 min)

The recipe is sized like nanoGPT's CPU example of shakespeare_char (4 layers, 4 heads, 128 wide, context 64,
batch 12, AdamW, warm-up + cosine, clipping at 1.0); the plain loop is genlab's GPT net trained by hand with
the same initial weights, batches, optimiser, schedule and clipping (benchmarks/overhead.py, `PlainLM`), and
it validates on the same windows whenever genlab does. Both run in this process, taking turns of
`--block` steps (see overhead.py), one torch thread. `--steps N` runs the recipe with `trainer.max_steps=N+1`
(the schedule then spans the run; genlab's last step only closes the timing); `--full` keeps its 2,000.

Printed: the training losses of both loops step by step (max difference), the validation loss of both
nets at the end, whether every weight is `torch.equal`, and the wall and CPU time of both: steps alone
(median and quartiles over runs of 10 steps), and whole training loops (genlab's with its validations, text
samples and checkpoints; the plain loop's with its validations).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (benchmarks/ is not a package)

EXPERIMENT = "shakespeare_gpt"


@torch.no_grad()
def validation_loss(net: torch.nn.Module, loader: Any) -> float:
    """Mean next-token NLL (nats) over every window of the validation loader, as genlab's `val/loss`."""
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    for x, y in loader:
        total += F.cross_entropy(net(x).flatten(0, 1).float(), y.flatten()).item() * x.size(0)
        count += x.size(0)
    net.train(was_training)
    return total / count


class Parity(overhead.Interleave):
    """Interleave plus a plain validation each time genlab validates, run (and timed) between steps."""

    def __init__(self, seed: int, warmup: int, steps: int, repeats: int) -> None:
        super().__init__(seed, warmup, steps, repeats)
        self.plain_validation: list[tuple[float, float]] = []  # (wall, CPU) seconds of each
        self.val_losses: dict[str, float] = {}
        self._validation_due = False
        self._loader: Any = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_start(trainer, pl_module)
        self._validation_due = trainer.state.fn == "fit" and not trainer.sanity_checking
        self._loader = trainer.datamodule.val_dataloader()

    def between_steps(self, trainer: L.Trainer, k: int) -> bool:
        ran = super().between_steps(trainer, k)
        if self._validation_due:
            self._validate_plain()
            ran = True
        return ran

    def _validate_plain(self, timed: bool = True) -> None:
        self._validation_due = False
        start = overhead._clocks()
        self.val_losses["plain"] = validation_loss(self.loop.net, self._loader)
        end = overhead._clocks()
        if timed:  # genlab's validations between steps are in its time; the one after the last is not
            self.plain_validation.append((end[0] - start[0], end[1] - start[1]))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the plain loop catches up; weights compared
        if self._validation_due:  # genlab's validation after its last step
            self._validate_plain(timed=False)
        self.val_losses["genlab (logged)"] = float(trainer.callback_metrics["val/loss"])
        self.val_losses["genlab"] = validation_loss(pl_module.net, self._loader)


def run(steps: int | None, block: int, overrides: list[str]) -> Parity:
    if steps is not None:
        repeats = max(1, steps // block)
        overrides = [f"trainer.max_steps={repeats * block + 1}", *overrides]
    else:  # the recipe's own budget: blocks up to its last step
        repeats = (2000 - 1) // block
    node = {
        "_target_": overhead._target(Parity),
        "seed": "${seed}",
        "warmup": 0,
        "steps": block,
        "repeats": repeats,
    }
    with tempfile.TemporaryDirectory() as tmp:
        overhead.train(EXPERIMENT, Path(tmp) / "run", {"parity": node}, overrides)
    return Parity.last


def report(p: Parity, chunk: int = 10) -> str:
    losses = {name: torch.stack(values).tolist() for name, values in p.losses.items()}
    n = min(len(losses["plain"]), len(losses["genlab"]))
    diffs = [abs(a - b) for a, b in zip(losses["plain"][:n], losses["genlab"][:n])]
    lines = [
        f"{EXPERIMENT}: {p.batches} steps each, in turns of {p.steps}; torch {torch.__version__}, "
        f"lightning {L.__version__}, one thread",
        "",
        "| | plain loop | genlab train |",
        "|---|---|---|",
    ]
    for step in sorted({0, 9, 99, 249, n // 2, n - 1} & set(range(n))):
        lines.append(
            f"| train loss, step {step + 1} | {losses['plain'][step]:.4f} | {losses['genlab'][step]:.4f} |"
        )
    lines.append(
        f"| val loss (nats/char), end | {p.val_losses['plain']:.4f} | {p.val_losses['genlab']:.4f} |"
    )
    figures = overhead.summarize(p, chunk)
    for clock, i in (("wall", 0), ("cpu", 1)):
        ratios, plain, genlab = (figures[clock][key] for key in ("ratio", "plain_ms", "genlab_ms"))
        lines.append(
            f"| {clock} ms per step: median [quartiles] over runs of {figures['steps_per_figure']} steps "
            f"| {overhead._spread(plain)} | {overhead._spread(genlab)}, ratio {overhead._spread(ratios, 3)} |"
        )
        steps_plain = sum(t[i] for b in p.plain for t in b)
        steps_genlab = sum(t[i] for b in p.genlab for t in b)
        periodic = sum(t[i] for t, _ in {(t, b) for _, t, b in p.events})
        validation_plain = sum(t[i] for t in p.plain_validation)
        total = (steps_genlab + periodic) / (steps_plain + validation_plain)
        lines.append(
            f"| {clock} s in all: steps + periodic work | {steps_plain:.1f} + {validation_plain:.1f} validation "
            f"| {steps_genlab:.1f} + {periodic:.1f} (ratio {total:.3f}) |"
        )
    kinds = sorted({what for what, _, _ in p.events})
    lines += [
        "",
        f"training losses: max |plain - genlab| over {n} steps = {max(diffs):.3g}; "
        f"genlab's logged val/loss {p.val_losses['genlab (logged)']:.4f}",
        f"weights after {p.batches} steps: "
        + ("torch.equal" if p.equal else f"differ ({', '.join(p.unequal)}; max {p.max_abs_diff:.3g})"),
        f"genlab's periodic steps: {', '.join(kinds) or 'none'} (a step holding several is counted once)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Parity:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--full", action="store_true", help="the recipe's 2,000 iterations")
    parser.add_argument("--block", type=int, default=1, help="steps per turn of each loop (default 1)")
    parser.add_argument("--override", action="append", default=[], help="a config override")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    parity = run(None if args.full else args.steps, args.block, args.override)
    print(report(parity))
    if not math.isfinite(parity.val_losses["plain"]):
        raise SystemExit(1)
    return parity


if __name__ == "__main__":
    main()
