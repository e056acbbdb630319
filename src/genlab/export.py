"""`genlab export run=RUN_DIR | ckpt=PATH format=onnx [out=FILE]`: a run's network for use outside Python.

What is exported is the part a user runs without genlab: an image model with a deterministic decoder (VAE,
GAN) as `latents [B, latent_dim] -> images [B, C, H, W]` in [0, 1]; a language model's forward pass as
`ids [B, T] -> logits [B, T, vocab]` (sampling stays with the caller). Batch and sequence length are dynamic.
The file is checked at once: onnxruntime runs it on example inputs and must agree with torch.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from genlab.config import command_options, conf_dir
from genlab.errors import ConfigError, GenlabError

FORMATS = ("onnx",)
RAW_STRINGS = ("run", "ckpt", "out")


def parse_args(argv: list[str]) -> tuple[DictConfig, list[str]]:
    """(conf/export.yaml merged with the args naming its keys, the other args: overrides of the run config)."""
    options, run_overrides, given = command_options("export", argv, RAW_STRINGS)
    if options.format not in FORMATS:
        raise ConfigError(f"format={options.format!r}: choose one of {', '.join(FORMATS)}")
    return options, run_overrides


def exportable(module: Any) -> tuple[Any, tuple[Any, ...], list[str], list[str], dict[str, dict[int, str]]]:
    """(nn.Module to export, example inputs, input names, output names, dynamic axes) for `module`."""
    import torch
    from torch import nn

    from genlab.models.base import LanguageModel, LatentImageGenerator

    if isinstance(module, LanguageModel):
        net = module.net

        class Forward(nn.Module):  # the net without its optional KV cache argument
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, ids):
                return self.net(ids)

        ids = torch.randint(
            0, net.vocab_size, (2, min(8, net.block_size)), generator=torch.Generator().manual_seed(0)
        )
        return (
            Forward(),
            (ids,),
            ["ids"],
            ["logits"],
            {"ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch", 1: "tokens"}},
        )
    deterministic = isinstance(module, LatentImageGenerator) and not hasattr(module, "make_sampler")
    if deterministic and getattr(module, "num_classes", None) is None:

        class Decoder(nn.Module):  # latents -> images in [0, 1], as module.sample_from_latents
            def __init__(self):
                super().__init__()
                self.module = module

            def forward(self, latents):
                return self.module.sample_from_latents(latents)

        latents = module.draw_latents(2, torch.Generator().manual_seed(0))
        return (
            Decoder(),
            (latents,),
            ["latents"],
            ["images"],
            {"latents": {0: "batch"}, "images": {0: "batch"}},
        )
    raise ConfigError(
        f"{type(module).__name__} has no ONNX export: genlab exports a language model's forward pass and an "
        "unconditional image model's deterministic decoder (VAE, GAN); diffusion sampling is a loop"
    )


def export(options: DictConfig, run_overrides: list[str]) -> list[str]:
    """Write and check the ONNX file; returns the lines describing it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "genlab export needs onnx and onnxruntime, which are not installed: pip install 'genlab[export]'"
        ) from None
    import numpy as np
    import torch

    from genlab.runs.loading import check_targets, load_module, load_run_config, locate

    run_dir, ckpt = locate(ckpt=options.ckpt, run=options.run)
    cfg = load_run_config(run_dir, run_overrides)
    check_targets(cfg, bool(options.trust_config))
    module = load_module(run_dir, ckpt, cfg, options.weights, "cpu")
    wrapper, inputs, input_names, output_names, dynamic = exportable(module)
    out = Path(options.out) if options.out else run_dir / "export" / f"{ckpt.stem}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper.eval(), inputs, str(out), input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic, opset_version=options.opset, dynamo=False,
        )  # fmt: skip
        expected = wrapper(*inputs).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: x.numpy() for name, x in zip(input_names, inputs)})[0]
    error = float(np.abs(got - expected).max())
    if error > options.tolerance:
        raise GenlabError(
            f"{out}: onnxruntime differs from torch by {error:.3g} > tolerance={options.tolerance}"
        )
    shapes = " ".join(f"{n}{list(x.shape)}" for n, x in zip(input_names, inputs))
    return [
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {', '.join(input_names)} -> {', '.join(output_names)}",
        f"checked with onnxruntime {onnxruntime.__version__} on {shapes}: max |onnx - torch| = {error:.2e}",
    ]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(
            __doc__.strip() + "\n\noptions (conf/export.yaml):\n" + (conf_dir() / "export.yaml").read_text()
        )
        return
    try:
        lines = export(*parse_args(argv))
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    for line in lines:
        print(line)
