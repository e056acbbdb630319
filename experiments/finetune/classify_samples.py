"""How often genlab's MNIST classifier reads an image generator's samples as one digit.

    python experiments/finetune/classify_samples.py RUN_OR_CKPT [RUN_OR_CKPT ...] --digit 3 --n 1000 \
        [--grid samples.png] [--json out.json]

Each run (or checkpoint) is loaded with `genlab.load` (EMA weights where the family keeps them, unless
`--weights raw`), draws `--n` samples from a fixed seed, and the classifier of `genlab train
experiment=mnist_classifier` labels them. Prints, per run, the fraction labelled `--digit` and the class
histogram of the samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import genlab
from genlab.metrics.extractors import load_classifier

DEFAULT_CLASSIFIER = Path("~/.cache/genlab/classifiers/mnist5k.ckpt")


@torch.inference_mode()
def class_histogram(
    path: str, classifier: torch.nn.Module, n: int, seed: int, batch_size: int, weights: str = "auto"
) -> dict:
    """Samples of one run, labelled: their class counts, and the first 64 samples for a grid."""
    model = genlab.load(path, device="cpu", weights=weights)
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(classifier.num_classes, dtype=torch.long)
    first = None
    start = time.perf_counter()
    for done in range(0, n, batch_size):
        images = model.sample(min(batch_size, n - done), generator=generator)  # (B, C, H, W) in [0, 1]
        first = images[:64] if first is None else first
        labels = classifier(images * 2 - 1).argmax(dim=1)  # the classifier reads [-1, 1], as in training
        counts += torch.bincount(labels, minlength=len(counts))
    return {"counts": counts.tolist(), "seconds": time.perf_counter() - start, "grid": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run dirs or checkpoint files of image generators")
    parser.add_argument("--digit", type=int, default=3, help="the class whose share is reported")
    parser.add_argument("--n", type=int, default=1000, help="samples per run")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the samples' noise (the same for every run)"
    )
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER), help="a mnist_classifier checkpoint")
    parser.add_argument(
        "--grid", nargs="*", default=[], help="one PNG per run: an 8x8 grid of its first samples"
    )
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--weights", default="auto", help="auto (EMA where kept) | ema | raw, as genlab.load")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if args.grid and len(args.grid) != len(args.runs):
        parser.error("--grid needs one PNG path per run")
    torch.set_num_threads(args.threads)

    classifier, _ = load_classifier(args.classifier)
    results = []
    for i, run in enumerate(args.runs):
        found = class_histogram(run, classifier, args.n, args.seed, args.batch_size, args.weights)
        share = found["counts"][args.digit] / args.n
        print(
            f"{run}: {share:.1%} labelled {args.digit}; classes {found['counts']} ({found['seconds']:.1f} s)"
        )
        if args.grid:
            from torchvision.utils import save_image

            save_image(found["grid"], args.grid[i], nrow=8, padding=2, pad_value=1.0)
        results.append(
            {
                "run": run,
                "digit": args.digit,
                "n": args.n,
                "seed": args.seed,
                "weights": args.weights,
                "share": share,
                "counts": found["counts"],
            }
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
