"""Two per-step calls a CPU run of genlab used to pay for (docs/performance.md, "Where the time goes"):
reseeding with `torch.manual_seed` vs the CPU generator alone, and an Adam step with and without Lightning's
`PYTORCH_NVML_BASED_CUDA_CHECK=1`. Prints a table: `python benchmarks/step_calls.py`."""

from __future__ import annotations

import os
import timeit

import lightning  # noqa: F401  (its import sets PYTORCH_NVML_BASED_CUDA_CHECK=1, as in a genlab run)
import torch


def ms_per_call(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e3


def deep(frames: int, call):
    """`call` from `frames` Python frames down, as a callback hook runs inside Lightning's loop."""
    return deep(frames - 1, call) if frames else call()


def main() -> None:
    torch.set_num_threads(1)
    rows = [
        (
            "reseed 60 frames deep: torch.manual_seed / torch.default_generator.manual_seed",
            ms_per_call(lambda: deep(60, lambda: torch.manual_seed(1)), 300),
            ms_per_call(lambda: deep(60, lambda: torch.default_generator.manual_seed(1)), 300),
        )
    ]
    params = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(4)]
    for p in params:
        p.grad = torch.randn_like(p)
    adam = torch.optim.Adam(params)
    with_check = ms_per_call(adam.step, 500)
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    rows.append(
        (
            "4-tensor Adam.step: PYTORCH_NVML_BASED_CUDA_CHECK=1 / unset",
            with_check,
            ms_per_call(adam.step, 500),
        )
    )
    print("| call | before ms | after ms |\n|---|---|---|")
    for name, before, after in rows:
        print(f"| {name} | {before:.3f} | {after:.3f} |")


if __name__ == "__main__":
    main()
