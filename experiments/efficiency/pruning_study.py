"""Sparsity vs quality: global L1 magnitude pruning (the `l1_unstructured` + `use_global_unstructured` of
conf/callbacks/pruning.yaml, applied once after training, no fine-tuning) of a trained run at several amounts.

    python experiments/efficiency/pruning_study.py outputs/efficiency/gpt outputs/efficiency/vae

Writes `checkpoints/pruned-<amount>.ckpt` into each run dir, evaluates each with `genlab eval full_split=false`
(the run's test subset: 480 windows for the GPT; FID on 500 samples for the VAE),
prints a markdown table and writes pruning.png and pruning.json beside this script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

import genlab

AMOUNTS = (0.0, 0.3, 0.5, 0.7, 0.9)
HERE = Path(__file__).parent


def pruned_checkpoint(run: Path, amount: float) -> Path:
    model = genlab.load(run, device="cpu", weights="raw")
    layers = [
        (m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    ]
    if amount:
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
        for module, name in layers:
            prune.remove(module, name)
    source = torch.load(model.checkpoint_path, map_location="cpu", weights_only=True)
    target = run / "checkpoints" / f"pruned-{amount:.2f}.ckpt"
    torch.save({**source, "state_dict": model.state_dict()}, target)
    return target


def quality(ckpt: Path) -> dict[str, float]:
    subprocess.run(
        [sys.executable, "-m", "genlab.cli", "eval", f"ckpt={ckpt}", "trainer.accelerator=cpu", "device=cpu",
         "threads=1", "fidelity.novelty=false", "fidelity.n_samples=500", "full_split=false"],
        check=True, capture_output=True,
    )  # fmt: skip
    metrics = json.loads(ckpt.with_name(f"{ckpt.stem}.eval.json").read_text())["metrics"]
    fid = next((v for k, v in metrics.items() if k.startswith("fid/")), None)
    return {"test/ppl": metrics.get("test/ppl"), "test/elbo": metrics.get("test/elbo"), "fid": fid}


def main() -> None:
    results = {}
    for run in map(Path, sys.argv[1:]):
        results[run.name] = [{"amount": a, **quality(pruned_checkpoint(run, a))} for a in AMOUNTS]
        for row in results[run.name]:
            print(run.name, row, flush=True)
    (HERE / "pruning.json").write_text(json.dumps(results, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for name, rows in results.items():
        for ax, key in zip(axes, ("test/ppl", "test/elbo", "fid")):
            points = [(r["amount"], r[key]) for r in rows if r[key] is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
                ax.set_title(key)
                ax.set_xlabel("share of weights pruned")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "pruning.png", dpi=110)


if __name__ == "__main__":
    main()
