"""`genlab quantize run=RUN_DIR | ckpt=PATH method=dynamic_int8|fp16 [out=DIR]`: a smaller copy of a trained run.

- `dynamic_int8`: every `nn.Linear` becomes torch.ao's dynamically quantised Linear (int8 weights, activations
  quantised per call; CPU only). It fits the GPT, whose weights are almost all Linear; the convolutional image
  nets keep their convolutions in float32 (only their few Linear layers change).
- `fp16`: every floating-point weight is stored as float16 and computed in float32 once loaded: half the size
  on disk for every family, the speed unchanged. (Static int8 convolutions would need calibration data and
  torch.ao's FX flow, which is deprecated in favour of torchao: not done.)

The new run dir holds the source's `.hydra/` config and tokenizer, `checkpoints/<method>.ckpt` (weights and a
`quantization` entry that `genlab eval`, `genlab sample`, `genlab serve` and `genlab.load` read) and a run.json
naming its source. Also here: `PruningSchedule`, the `amount` schedule of conf/callbacks/pruning.yaml.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from genlab.config import command_options, conf_dir
from genlab.errors import CheckpointError, ConfigError, GenlabError

METHODS = ("dynamic_int8", "fp16")
RAW_STRINGS = ("run", "ckpt", "out")


def parse_args(argv: list[str]) -> tuple[DictConfig, list[str]]:
    """(conf/quantize.yaml merged with the args naming its keys, the other args: overrides of the run config)."""
    options, run_overrides, given = command_options("quantize", argv, RAW_STRINGS)
    if options.method not in METHODS:
        raise ConfigError(f"method={options.method!r}: choose one of {', '.join(METHODS)}")
    return options, run_overrides


def apply(module: Any, method: str) -> int:
    """Change `module` in place so that it holds the layers of `method`; returns how many layers changed."""
    import torch
    from torch import nn

    if method == "fp16":
        return 0  # same layers: only the stored weights are float16
    if method != "dynamic_int8":
        raise CheckpointError(
            f"unknown quantization method {method!r}: this genlab knows {', '.join(METHODS)}"
        )
    linears = sum(isinstance(m, nn.Linear) for m in module.modules())
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return linears


def state_dict_of(module: Any, method: str) -> dict[str, Any]:
    """The weights to store: as they are (int8 layers pack their own), or floating tensors as float16."""
    state = module.state_dict()
    if method == "fp16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return state


def load_quantized(module: Any, checkpoint: dict[str, Any], ckpt: Path) -> None:
    """Load a checkpoint written by `genlab quantize` into a freshly built `module` (`loading.load_weights`)."""
    method = checkpoint["quantization"].get("method")
    apply(module, method)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)  # fp16 tensors are cast to the module's
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(
            f"{ckpt} ({method}) does not fit {type(module).__name__} of its run's config ({first}): it comes from "
            "another run; quantize that run again"
        ) from None


def weights_bytes(state: dict[str, Any]) -> int:
    """Bytes of `state` saved alone with torch.save: the weights on disk, without optimiser states."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


def quantize(options: DictConfig, run_overrides: list[str]) -> list[str]:
    """Write the quantised copy of the run `options` names; returns the lines describing it."""
    from genlab.runs.loading import check_targets, load_module, load_run_config, locate, read_checkpoint

    run_dir, ckpt = locate(ckpt=options.ckpt, run=options.run)
    out = (
        Path(options.out).absolute() if options.out else run_dir.with_name(f"{run_dir.name}-{options.method}")
    )
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty: choose another out=")
    cfg = load_run_config(run_dir, run_overrides)
    check_targets(cfg, bool(options.trust_config))
    source = read_checkpoint(ckpt)
    if "quantization" in source:
        raise ConfigError(
            f"{ckpt} is quantized already ({source['quantization']['method']}): quantize its source"
        )
    import torch

    from genlab.runs.record import now, package_versions, write_json_atomic

    module = load_module(run_dir, ckpt, cfg, "auto", "cpu")
    before = weights_bytes(module.state_dict())
    layers = apply(module, options.method)
    state = state_dict_of(module, options.method)
    after = weights_bytes(state)

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / ".hydra", out / ".hydra", ignore=shutil.ignore_patterns("resume-*"))
    for path in run_dir.iterdir():  # the tokenizer and whatever else the run keeps beside its record
        if path.is_file() and path.name != "run.json" and path.suffix != ".log":
            shutil.copy2(path, out / path.name)
    (out / "checkpoints").mkdir()
    target = out / "checkpoints" / f"{options.method}.ckpt"
    quantization = {
        "method": options.method,
        "layers": layers,  # Linear layers made int8 (0 for fp16: every weight is stored in half precision)
        "device": "cpu" if options.method == "dynamic_int8" else None,  # int8 kernels run on the CPU only
        "source_checkpoint": str(ckpt),
    }
    torch.save(
        {
            "state_dict": state,
            "quantization": quantization,
            "epoch": source.get("epoch"),
            "global_step": source.get("global_step"),
        },
        target,
    )
    try:
        record = __import__("json").loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        record = {}
    write_json_atomic(
        out / "run.json",
        {
            "status": "completed",
            "task": "quantize",
            "experiment": record.get("experiment") or cfg.get("experiment_name"),
            "seed": record.get("seed"),
            "source": {
                "run_dir": str(run_dir),
                "checkpoint": str(ckpt),
                "metrics": record.get("metrics", {}),
            },
            "quantization": {**quantization, "weights_bytes_before": before, "weights_bytes_after": after},
            "versions": package_versions(),
            "started": now(),
            "finished": now(),
            "metrics": {},  # this copy's own: `genlab eval run=<this dir>` measures them
            "best_checkpoint": str(target.relative_to(out)),
            "error": None,
        },
    )
    return [
        f"{options.method}: {layers} Linear layers quantized"
        if layers
        else f"{options.method}: weights stored as float16",
        f"weights {before / 1e6:.3f} MB -> {after / 1e6:.3f} MB ({after / before:.2f}x) in {target}",
        f"evaluate it with: genlab eval run={out}",
    ]


class PruningSchedule:
    """`amount` of Lightning's ModelPruning as a function of the epoch: prunes at the end of epochs
    `start_epoch` .. `start_epoch + epochs - 1` so that `final_amount` of the weights are zero after the last.

    ModelPruning prunes a share of the weights still left each time, hence the geometric steps:
    (1 - step) ** epochs = 1 - final_amount.
    """

    def __init__(self, final_amount: float, epochs: int = 1, start_epoch: int = 0):
        if not 0 <= final_amount < 1:
            raise ConfigError(
                f"pruning final_amount={final_amount} must be in [0, 1): the share of weights zeroed"
            )
        if epochs < 1 or start_epoch < 0:
            raise ConfigError(
                f"pruning epochs={epochs} must be at least 1 and start_epoch={start_epoch} at least 0"
            )
        self.final_amount, self.epochs, self.start_epoch = final_amount, epochs, start_epoch
        self.step = 1 - (1 - final_amount) ** (1 / epochs)

    def __call__(self, epoch: int) -> float:
        return self.step if self.start_epoch <= epoch < self.start_epoch + self.epochs else 0.0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(
            __doc__.strip()
            + "\n\noptions (conf/quantize.yaml):\n"
            + (conf_dir() / "quantize.yaml").read_text()
        )
        return
    try:
        lines = quantize(*parse_args(argv))
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    for line in lines:
        print(line)
