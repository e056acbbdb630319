"""Loading a trained module from a run directory or checkpoint: one path for eval, sample, `genlab.load`.

Locates the checkpoint inside the run dir actually given (never an absolute path stored in run.json, so a
copied or moved run dir loads its own files), reads the run's stored config, refuses `_target_`s outside
genlab/torch/lightning, reads the checkpoint weights-only, builds the module (from the run dir's tokenizer
rather than the dataset when it can), loads the weights and chooses EMA or raw weights.
Importing this module does not import torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from genlab.errors import CheckpointError, ConfigError

CONFIG_FILE = Path(".hydra") / "config.yaml"
# a stored config is data from disk: only these packages' classes are built from it unless trust_config=true
TRUSTED_PREFIXES = ("genlab.", "torch.", "lightning.")
# ...and not these, which load or run code themselves
UNTRUSTED_TARGETS = (
    "torch.hub.",
    "torch.load",
    "torch.jit.load",
    "torch.package.",
    "torch.utils.cpp_extension.",
)
WEIGHTS = ("auto", "ema", "raw")
DEVICES = ("auto", "cpu", "cuda")


def locate(ckpt: str | Path | None = None, run: str | Path | None = None) -> tuple[Path, Path]:
    """(run dir, checkpoint) of a checkpoint file (its run dir is its folder's parent) or a run dir (run.json's
    best checkpoint, found by name in the run dir's checkpoints/, else checkpoints/last.ckpt)."""
    if ckpt:
        path = Path(ckpt).expanduser().absolute()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist: pass ckpt= an existing .ckpt file")
        return path.parent.parent, path
    run_dir = Path(str(run)).expanduser().absolute()
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist: pass run= a genlab train run folder")
    candidates = []
    best = _best_checkpoint(run_dir)
    if best:
        # run.json may hold the absolute path where the run was trained: the copy here is the one meant
        if not Path(best).is_absolute():
            candidates.append(run_dir / best)
        candidates.append(run_dir / "checkpoints" / Path(best).name)
    candidates.append(run_dir / "checkpoints" / "last.ckpt")
    for candidate in candidates:
        if candidate.is_file():
            return run_dir, candidate
    raise CheckpointError(f"{run_dir} has no checkpoint (run.json best_checkpoint or checkpoints/last.ckpt)")


def locate_path(path: str | Path) -> tuple[Path, Path]:
    """`locate` for one path that is either a checkpoint file or a run dir."""
    return locate(ckpt=path) if Path(path).expanduser().is_file() else locate(run=path)


def _best_checkpoint(run_dir: Path) -> str | None:
    try:
        best = json.loads((run_dir / "run.json").read_text()).get("best_checkpoint")
    except (OSError, ValueError, AttributeError):
        return None  # no or unreadable run.json: checkpoints/last.ckpt
    return best if isinstance(best, str) and best else None


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The run's stored config, with its paths pointing at the run dir and the overrides applied.

    An override must name a key the config has (`+key=value` adds one): a misspelt option fails here.
    """
    stored = run_dir / CONFIG_FILE
    if not stored.is_file():
        raise ConfigError(
            f"{stored} is missing: ckpt=/run= must belong to a run directory made by genlab train"
        )
    cfg = OmegaConf.load(stored)
    _check_override_keys(cfg, overrides)
    with open_dict(cfg):
        # `${hydra:runtime.output_dir}` only resolves inside Hydra: the run dir is known here
        cfg.paths.output_dir = str(run_dir)
        if "tokenizer_dir" in cfg.data:
            cfg.data.tokenizer_dir = str(run_dir)  # the ids the checkpoint was trained with
        cfg.merge_with(OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    return cfg


def _check_override_keys(cfg: DictConfig, overrides: list[str] | tuple[str, ...]) -> None:
    missing = object()
    for override in overrides:
        key = override.split("=", 1)[0]
        if (
            not key.startswith("+")
            and OmegaConf.select(cfg, key, default=missing, throw_on_resolution_failure=False) is missing
        ):
            raise ConfigError(
                f"unknown option {key!r}: it is neither an option of this command nor a key of the run's "
                f"config (add a new key with +{key}=...)"
            )


def check_targets(node: Any, trust: bool, where: str = "", flag: str = "trust_config=true") -> None:
    """Refuse `_target_`s outside genlab/torch/lightning: instantiating one runs arbitrary code."""
    if trust:
        return
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if target is not None and (
            not str(target).startswith(TRUSTED_PREFIXES) or str(target).startswith(UNTRUSTED_TARGETS)
        ):
            raise ConfigError(
                f"the run config's {where or '<root>'}._target_={target} is not a genlab/torch/lightning "
                f"class: pass {flag} only if you trust that config"
            )
        for key, value in node.items_ex(resolve=False):
            check_targets(value, trust, f"{where}.{key}" if where else str(key), flag)
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node._iter_ex(resolve=False)):
            check_targets(value, trust, f"{where}[{i}]", flag)


def read_checkpoint(ckpt: Path, trust: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint as tensors and plain Python: pickled objects are refused unless `trust`."""
    import pickle

    import torch

    from genlab.checkpoints import is_complete

    try:
        if not is_complete(ckpt):  # a torch checkpoint is a zip archive; a cut-off copy has lost its index
            raise ValueError("truncated, or not a torch checkpoint")
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:  # weights_only refused a class: torch names it
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"an object of class {found.group(1)}" if found else "Python objects"
        raise CheckpointError(
            f"checkpoint {ckpt} holds {what}, beyond tensors and plain values; pass trust_checkpoint=true "
            "only if you trust where it came from"
        ) from None
    except Exception as err:  # truncated, not a torch file
        message = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"cannot read checkpoint {ckpt} ({type(err).__name__}: {message[:200]})"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{ckpt} is not a Lightning checkpoint (no state_dict): pass a genlab train checkpoint"
        )
    return checkpoint


def load_weights(module: Any, checkpoint: dict[str, Any], ckpt: Path) -> None:
    """Load the checkpoint's state_dict into `module`; keys that do not fit mean another family or architecture."""
    if "quantization" in checkpoint:  # written by `genlab quantize`: its layers are rebuilt first
        from genlab.quantize import load_quantized

        load_quantized(module, checkpoint, ckpt)
        return
    try:
        module.on_load_checkpoint(checkpoint)  # may check the checkpoint itself: name the file in its message
    except CheckpointError as err:
        raise CheckpointError(f"{ckpt}: {err}") from err
    result = module.load_state_dict(checkpoint["state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{ckpt} does not fit {type(module).__name__} of this run's config ({len(result.missing_keys)} "
            f"missing, {len(result.unexpected_keys)} unexpected keys, e.g. "
            f"{(result.missing_keys + result.unexpected_keys)[0]}): it comes from another family or architecture"
        )


def load_tokenizer_of(cfg: DictConfig, run_dir: Path) -> Any | None:
    """A text run's tokenizer from its run dir, its vocab_size put in `cfg.runtime`; None for other runs."""
    if "tokenizer_dir" not in cfg.data:
        return None
    from genlab.data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(run_dir)
    with open_dict(cfg):
        cfg.runtime = OmegaConf.merge(cfg.get("runtime") or {}, {"vocab_size": tokenizer.vocab_size})
    return tokenizer


def missing_runtime(cfg: DictConfig) -> list[str]:
    """The `${runtime.*}` values the model config reads that are still unknown (only the data can tell)."""
    text = json.dumps(OmegaConf.to_container(cfg.model, resolve=False))
    names = sorted(set(re.findall(r"\$\{runtime\.(\w+)\}", text)))
    runtime = cfg.get("runtime") or {}
    return [name for name in names if runtime.get(name) is None]


def build_module(cfg: DictConfig) -> Any:
    """The run's module with no optimiser; reads the dataset only when the model needs `${runtime.*}` values
    that neither the stored config nor the run dir's tokenizer give."""
    from genlab.build import build_datamodule
    from genlab.build import build_module as build

    if missing_runtime(cfg):
        build_datamodule(cfg)  # fills cfg.runtime
    return build(cfg, optimizer=False)


def choose_weights(module: Any, weights: str) -> None:
    """`auto`: the EMA weights where the family keeps them; `ema`: those, or an error; `raw`: the trained ones."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights={weights!r}: choose one of {', '.join(WEIGHTS)}")
    has_ema = bool(getattr(module, "has_ema", False))
    if weights == "ema" and not has_ema:
        raise ConfigError(
            f"weights=ema: this {type(module).__name__} run has no EMA weights (the family keeps none, or "
            "model.ema_decay was null); use weights=raw or weights=auto"
        )
    if has_ema:
        module.use_ema = weights != "raw"


def resolve_device(device: str) -> str:
    """`auto`: the GPU when there is one, else the CPU; `cuda` without one is an error."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"device={device!r}: choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA device: use device=auto or device=cpu")
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_module(
    run_dir: Path,
    ckpt: Path,
    cfg: DictConfig,
    weights: str = "auto",
    device: str = "cpu",
    trust_checkpoint: bool = False,
) -> Any:
    """The module of `cfg` with the weights of `ckpt`, in eval mode on `device`; a language model gets its
    run's tokenizer as `.tokenizer`. Also sets `.run_dir`, `.checkpoint_path` and `.run_config`."""
    tokenizer = load_tokenizer_of(cfg, run_dir)
    checkpoint = read_checkpoint(
        ckpt, trust_checkpoint
    )  # before the module is built: a bad file fails at once
    module = build_module(cfg)
    load_weights(module, checkpoint, ckpt)
    only = (checkpoint.get("quantization") or {}).get("device")
    if only and device != only:
        raise ConfigError(f"{ckpt} is quantized for the {only} only: pass device={only}")
    choose_weights(module, weights)
    if tokenizer is not None:
        module.tokenizer = tokenizer
    module.run_dir, module.checkpoint_path, module.run_config = run_dir, ckpt, cfg
    return module.to(device).eval()


def load(
    path: str | Path,
    device: str = "auto",
    weights: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
    trust_checkpoint: bool = False,
    trust_config: bool = False,
) -> Any:
    """The trained module of a run dir (its best checkpoint) or a checkpoint file, in eval mode, ready for
    `model.sample(16, generator=g)` or `model.generate(...)` / `model.generate_text("ROMEO.", 200)`.

    Args:
        path: a run directory made by `genlab train`, or a checkpoint file inside its checkpoints/.
        device: auto (the GPU if there is one), cpu or cuda.
        weights: auto (EMA weights where the family keeps them), ema (an error where there are none) or raw.
        overrides: `key=value` changes to the run's stored config (e.g. `model.num_inference_steps=20`).
        trust_checkpoint: unpickle arbitrary objects from the checkpoint (only for files you trust).
        trust_config: instantiate `_target_`s outside genlab/torch/lightning (only for configs you trust).
    """
    run_dir, ckpt = locate_path(path)
    cfg = load_run_config(run_dir, list(overrides))
    check_targets(cfg, trust_config)
    return load_module(
        run_dir, ckpt, cfg, weights=weights, device=resolve_device(device), trust_checkpoint=trust_checkpoint
    )
