"""Images per second of each image family's `sample()` on the CPU, by batch size, in no-grad and inference mode.

    python benchmarks/sampling.py                          # every image experiment, one torch thread
    python benchmarks/sampling.py --families ddpm --batch-sizes 100,200,400 --seconds 60 --threads 2

What FID costs: `callbacks.fidelity` draws `n_samples` images in batches of `batch_size` (200 by default)
through `genlab.metrics.sampling.draw`, the same `sample()` timed here. The modules are built from each shipped
experiment's config (untrained: the speed does not depend on the weights), in eval mode; each batch size
runs whole batches until `--seconds` have passed (at least one batch) after one small untimed batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (benchmarks/ is not a package)

MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def build(experiment: str):
    """The experiment's module as `genlab train` builds it, in eval mode."""
    from hydra.utils import instantiate

    from genlab.build import build_datamodule

    with tempfile.TemporaryDirectory() as tmp:
        cfg = overhead.compose(experiment, Path(tmp))
        torch.manual_seed(cfg.seed)
        build_datamodule(cfg)  # fills cfg.runtime (image shape, classes)
        module = instantiate(cfg.model, _convert_="all")
    return module.eval()


def images_per_second(module, batch_size: int, mode: str, seconds: float) -> float:
    generator = torch.Generator().manual_seed(0)
    with MODES[mode]():
        module.sample(min(batch_size, 16), generator=generator)  # warm-up: allocator, lazy tables
        done, start = 0, time.perf_counter()
        while True:
            module.sample(batch_size, generator=generator)
            done += batch_size
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return done / elapsed


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--families", help="comma-separated experiment, model or family names (default: all)")
    parser.add_argument(
        "--batch-sizes", default="50,100,200,400", help="comma-separated (default 50,100,200,400)"
    )
    parser.add_argument("--modes", default="no_grad,inference_mode", help="no_grad and/or inference_mode")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="time per batch size and mode (default 10)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from genlab.models.base import ImageGenerator

    found = overhead.experiments(args.families, every=True)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    modes = args.modes.split(",")
    rows = []
    for name in found:
        module = build(name)
        if not isinstance(module, ImageGenerator):
            continue
        for size in sizes:
            for mode in modes:
                rate = images_per_second(module, size, mode, args.seconds)
                rows.append({"experiment": name, "batch_size": size, "mode": mode, "images_per_s": rate})
                print(f"{name} batch {size} {mode}: {rate:.1f} images/s", file=sys.stderr)

    print(
        f"\nimages/s of sample() on the CPU, {args.threads} torch thread(s), torch {torch.__version__}; "
        f"{args.seconds:g} s per cell (at least one batch)\n"
    )
    print("| experiment | batch | " + " | ".join(modes) + " | 1,000 images take |")
    print("|---|---|" + "---|" * len(modes) + "---|")
    for name in dict.fromkeys(r["experiment"] for r in rows):
        for size in sizes:
            cells = {
                r["mode"]: r["images_per_s"]
                for r in rows
                if r["experiment"] == name and r["batch_size"] == size
            }
            best = max(cells.values())
            print(
                f"| {name} | {size} | "
                + " | ".join(f"{cells[m]:.1f}" for m in modes)
                + f" | {1000 / best:.1f} s |"
            )
    return rows


if __name__ == "__main__":
    main()
