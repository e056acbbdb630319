"""Size on disk, CPU speed and quality of a trained run before and after `genlab quantize`, one thread.

    python experiments/efficiency/measure.py outputs/efficiency/gpt outputs/efficiency/gpt-dynamic_int8 ...

Each argument is a run dir (a source or its quantized copy); quality comes from the `genlab eval` JSON beside
its checkpoint (run `genlab eval run=<dir>` first). Prints one markdown row per run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import genlab
from genlab.quantize import weights_bytes


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(run: Path) -> dict:
    model = genlab.load(run, device="cpu")
    ckpt = model.checkpoint_path
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    row = {"run": run.name, "weights_MB": weights_bytes(state) / 1e6, "file_MB": ckpt.stat().st_size / 1e6}
    evaluation = ckpt.with_name(f"{ckpt.stem}.eval.json")
    metrics = json.loads(evaluation.read_text())["metrics"] if evaluation.is_file() else {}
    with torch.inference_mode():
        if hasattr(model, "generate"):
            prompt = model.encode("ROMEO.\n")
            seconds = best_of(
                lambda: model.generate(prompt, 500, 1.0, generator=torch.Generator().manual_seed(0))
            )
            row |= {
                "speed": f"{500 / seconds:.0f} tokens/s",
                "quality": f"test ppl {metrics.get('test/ppl', float('nan')):.4f}",
            }
        else:
            seconds = best_of(lambda: model.sample(256, generator=torch.Generator().manual_seed(0)))
            fid = next((v for k, v in metrics.items() if k.startswith("fid/")), float("nan"))
            row |= {
                "speed": f"{256 / seconds:.0f} images/s",
                "quality": f"test ELBO {metrics.get('test/elbo', float('nan')):.2f}, FID {fid:.2f}",
            }
    return row


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| run | weights on disk (MB) | checkpoint file (MB) | CPU speed, 1 thread | quality |")
    print("| --- | ---: | ---: | ---: | --- |")
    for arg in sys.argv[1:]:
        r = measure(Path(arg))
        print(
            f"| {r['run']} | {r['weights_MB']:.3f} | {r['file_MB']:.3f} | {r['speed']} | {r['quality']} |",
            flush=True,
        )
