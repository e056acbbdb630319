"""Wall time of an image-metric evaluation with a cold vs a warm reference-statistics cache.

    python benchmarks/reference_cache.py --checkpoint RUN/checkpoints/last.ckpt [--n-samples 2000] [--repeat 2]
    python benchmarks/reference_cache.py --extractor inception-v3-compat --weights W.pth --n-samples 50

The "generator" replays random held-out (test split) digits, so sampling costs next to nothing and the table
shows what the cache saves: reading and embedding the real split. A cold run starts from an empty cache
directory; the warm runs that follow reuse its entry. Times are in-process (imports and data reading excluded).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import Tensor


class HeldOutDigits:
    """An ImageGenerator over real test images: samples are random draws (with replacement) of them."""

    def __init__(self, images: Tensor):
        self.images = images

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.images[torch.randint(len(self.images), (n,), generator=generator)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extractor", default="classifier", choices=["classifier", "inception-v3-compat"])
    parser.add_argument("--checkpoint", help="the classifier checkpoint (or --weights for Inception)")
    parser.add_argument("--weights", help="local Inception weights (default: download on first use)")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2, help="warm evaluations after the cold one")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from genlab.data.images import ImageDataModule
    from genlab.metrics.fidelity import Fidelity

    datamodule = ImageDataModule(args.dataset)
    datamodule.setup()
    model = HeldOutDigits(datamodule.real_images("test"))
    weights = args.checkpoint if args.extractor == "classifier" else args.weights
    with tempfile.TemporaryDirectory() as cache_dir:
        fidelity = Fidelity(
            args.extractor, weights, n_samples=args.n_samples, batch_size=args.batch_size, cache_dir=cache_dir
        )
        fidelity.identity()  # hashing the weights file is part of every evaluation's key; do it once outside
        rows = []
        for i in range(1 + args.repeat):
            start = time.perf_counter()
            metrics = fidelity.evaluate(model, datamodule)
            seconds = time.perf_counter() - start
            cache = "warm" if fidelity.last_reference_cached else "cold"
            rows.append((i, cache, seconds, metrics))

    label, _ = fidelity.identity()
    n_real = min(args.n_samples, len(datamodule.train_dataloader().dataset))
    print(
        f"\n{label}: {args.n_samples} samples vs {n_real} real ({args.dataset} train), torch threads={args.threads}"
    )
    print(f"{'run':>4} {'cache':>6} {'seconds':>8}  fid")
    for i, cache, seconds, metrics in rows:
        fid = next((v for k, v in metrics.items() if k.startswith("fid/")), float("nan"))
        print(f"{i:>4} {cache:>6} {seconds:>8.2f}  {fid:.4f}")
    cold, warm = rows[0][2], min(r[2] for r in rows[1:]) if len(rows) > 1 else float("nan")
    print(f"saved by the cache: {cold - warm:.2f} s of {cold:.2f} s ({(cold - warm) / cold:.0%})")


if __name__ == "__main__":
    main()
