"""The FID floor of the classifier extractor: the 1,000 held-out real digits of mnist5k (val + test) scored as if
they were samples, against the first 1,000 training digits, as `genlab eval ... fidelity.n_samples=1000` scores a
model. Needs the classifier (`genlab train experiment=mnist_classifier`). `python experiments/conditional/real_floor.py`
"""

from pathlib import Path

import torch

from genlab.data.images import ImageDataModule
from genlab.metrics.fidelity import Fidelity, to_uint8_rgb


def main() -> None:
    cache = Path.home() / ".cache" / "genlab"
    data = ImageDataModule("mnist5k", root="data")
    data.setup("fit")
    data.setup("test")
    held_out = torch.cat([data.real_images("val"), data.real_images("test")])
    fidelity = Fidelity(
        weights_path=cache / "classifiers" / "mnist5k.ckpt",
        n_samples=len(held_out),
        metrics=("fid", "kid", "pr"),
        cache_dir=cache,
    )
    for name, value in fidelity.evaluate_samples(to_uint8_rgb(held_out), data).items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    main()
