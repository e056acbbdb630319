"""`genlab eval ckpt=PATH | run=RUN_DIR [options] [overrides]`: evaluate a checkpoint with its run's own config.
`genlab eval -m ... key=a,b,c`: one evaluation per value (Hydra's sweep syntax), a report each, and a table.

Rebuilds the datamodule and module as `genlab train` does, loads the checkpoint's weights (weights_only), then
computes the test loss (LM: loss, perplexity, bits per token over the full split) and, for image families,
FID/KID/IS/PR (the classifier from `${paths.cache_dir}/classifiers/<dataset>.ckpt` unless fidelity.checkpoint says
otherwise) and novelty, both from one draw of samples. Writes `<ckpt stem>.eval.json` (`.eval-val.json`
for split=val) beside the checkpoint (or `out=FILE`) and prints a table. Options are conf/eval.yaml's keys; any other
`key=value` overrides the run's config.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.atomic import atomic_write
from genlab.config import conf_dir
from genlab.errors import ConfigError, GenlabError
from genlab.runs.loading import (
    build_module,
    check_targets,
    load_run_config,
    load_weights,
    locate,
    read_checkpoint,
)


def parse_args(argv: list[str]) -> tuple[DictConfig, list[str]]:
    """conf/eval.yaml merged with the `key=value` args naming its keys; the other args override the run config."""
    options = OmegaConf.load(conf_dir() / "eval.yaml")
    own, run_overrides = [], []
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            raise ConfigError(
                f"unexpected argument {arg!r}: genlab eval takes key=value pairs, e.g. ckpt=PATH"
            )
        top = arg.split("=", 1)[0].split(".", 1)[0]
        (own if top in options else run_overrides).append(arg)
    options = OmegaConf.merge(options, OmegaConf.from_dotlist(own))
    if bool(options.ckpt) == bool(options.run):
        raise ConfigError("give exactly one of ckpt=PATH (a checkpoint) or run=RUN_DIR (a run directory)")
    if options.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={options.device!r}: choose auto, cpu or cuda")
    if options.split not in ("test", "val"):
        raise ConfigError(f"split={options.split!r}: choose test or val")
    return options, run_overrides


def evaluate(options: DictConfig, run_overrides: list[str]) -> dict[str, Any]:
    """Evaluate the checkpoint `options` names; returns the report also written to `<ckpt stem>.eval.json`."""
    run_dir, ckpt = locate(ckpt=options.ckpt, run=options.run)
    cfg = load_run_config(run_dir, run_overrides)
    check_targets(cfg, bool(options.trust_config))
    seed = cfg.seed if options.seed is None else options.seed

    import lightning as L  # heavy: after the arguments and config are known to be good
    import torch
    from hydra.utils import get_object

    from genlab.build import build_datamodule
    from genlab.models.base import ImageGenerator

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    # before the data is read: a bad file fails at once. Only a `trust_checkpoint=true` typed now unpickles
    # objects, never the stored config's value (a config file from elsewhere could set it)
    trusted = OmegaConf.from_dotlist([o for o in run_overrides if o.split("=", 1)[0] == "trust_checkpoint"])
    checkpoint = read_checkpoint(ckpt, trust=bool(trusted.get("trust_checkpoint")))
    with open_dict(cfg):
        if options.full_split:
            cfg.trainer[f"limit_{options.split}_batches"] = 1.0
            modality = getattr(get_object(cfg.model._target_), "modality", None)
            if modality in ("text", "seq2seq"):  # every sequence, not an even subset
                cfg.data.max_samples = None
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    load_weights(module, checkpoint, ckpt)

    metrics, seconds = split_losses(cfg, module, datamodule, options.split, seed)
    # Lightning hands the module back on the CPU: sampling (a DDPM's many passes) is where a GPU pays off
    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and cfg.trainer.get("accelerator") != "cpu" else "cpu"
    module.to(device).eval()

    report: dict[str, Any] = {}
    if isinstance(module, ImageGenerator) and hasattr(datamodule, "real_images"):
        report |= evaluate_images(options, cfg, module, datamodule, seed, metrics, seconds)
    if getattr(module, "modality", None) == "seq2seq":  # BLEU/chrF of beam and greedy decoding and of copying
        from genlab.metrics.translation import evaluate_translations

        loader = datamodule.test_dataloader() if options.split == "test" else datamodule.val_dataloader()
        found, took, _ = evaluate_translations(
            module, loader, datamodule.tokenizer, options.split, **options.translation
        )
        metrics.update(found)
        seconds.update(took)

    report = {
        "checkpoint": str(ckpt),
        "run_dir": str(run_dir),
        "experiment": cfg.get("experiment_name"),
        "model": cfg.model._target_,
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "split": options.split,
        "full_split": bool(options.full_split),
        "seed": seed,
        "device": str(device),
        "overrides": run_overrides,
        **report,
        "metrics": dict(sorted(metrics.items())),
        "seconds": seconds,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # one file per split, so a validation-split evaluation does not replace the test one; `out=` keeps
    # evaluations under different overrides (a guidance sweep) apart
    default = ckpt.with_name(f"{ckpt.stem}.eval{'' if options.split == 'test' else '-' + options.split}.json")
    out = Path(options.out) if options.get("out") else default
    with atomic_write(out, "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    report["path"] = str(out)
    return report


def split_losses(
    cfg: DictConfig, module: Any, datamodule: Any, split: str, seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The module's own metrics on `split` (its test or validation step), and the seconds they took."""
    import lightning as L
    from hydra.utils import instantiate

    from genlab.build import implements, scalar_metrics

    # one device, no loggers or callbacks: evaluation writes only its JSON
    trainer = instantiate(
        cfg.trainer,
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        devices=1,
        num_nodes=1,
        strategy="auto",
    )
    metrics: dict[str, float] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    L.seed_everything(seed, workers=True, verbose=False)
    if implements(module, "test_step" if split == "test" else "validation_step"):
        run_split = trainer.test if split == "test" else trainer.validate
        for result in run_split(module, datamodule=datamodule, verbose=False):
            metrics.update(scalar_metrics(result))
    seconds["loss"] = time.perf_counter() - start
    return metrics, seconds


def classifier_home(cfg: DictConfig) -> Path | None:
    """Where `genlab train experiment=mnist_classifier` puts the classifier for this run's dataset."""
    dataset = cfg.data.get("dataset")
    cache_dir = cfg.paths.get("cache_dir")
    return Path(cache_dir).expanduser() / "classifiers" / f"{dataset}.ckpt" if dataset and cache_dir else None


def evaluate_images(
    options: DictConfig,
    cfg: DictConfig,
    module: Any,
    datamodule: Any,
    seed: int,
    metrics: dict[str, float],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """FID & co., class metrics and novelty of one draw of an image generator's samples into `metrics` /
    `seconds` (the fidelity callback's component and options); returns the report's notes."""
    import torch

    from genlab.metrics.images import ImageMetrics

    chosen = OmegaConf.to_container(options.fidelity, resolve=True)
    report: dict[str, Any] = {}
    if chosen["n_samples"] == 0:
        return report
    if not chosen["checkpoint"] and chosen["extractor"] == "classifier":
        home = classifier_home(cfg)
        if home is not None and home.is_file():
            chosen["checkpoint"] = str(home)
        else:
            report["fid_skipped"] = (
                f"no classifier at {home}; make it with `genlab train experiment=mnist_classifier` "
                f"or pass fidelity.checkpoint=PATH"
            )
    chosen["cache_dir"] = chosen["cache_dir"] or cfg.paths.get("cache_dir")
    chosen["seed"] = seed
    scorer = ImageMetrics(**chosen)
    labels = scorer.labels_for(module)  # a conditional model: every class in turn
    start = time.perf_counter()
    from genlab.metrics.sampling import draw

    samples = draw(module, scorer.n_samples, scorer.batch_size, torch.Generator().manual_seed(seed), labels)
    seconds["sampling"] = time.perf_counter() - start
    cuda = torch.device(getattr(module, "device", "cpu")).type == "cuda"
    found, notes = scorer.score(samples, datamodule, labels, getattr(module, "num_classes", None), cuda=cuda)
    metrics.update(found)
    seconds.update(notes.pop("seconds"))
    return report | notes


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['experiment']} — {Path(report['checkpoint']).name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report["metrics"].items():
        table.add_row(name, f"{value:.6g}")
    console = Console()
    console.print(table)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds"].items())
    if report.get("fid_skipped"):
        console.print(f"FID skipped: {report['fid_skipped']}")
    console.print(f"written to {report['path']} ({timings})")


def sweep(argv: list[str]) -> list[tuple[str, list[str]]]:
    """`genlab eval -m`: one (name, arguments) per combination of the swept values, in Hydra's sweep syntax
    (`model.guidance_scale=0,0.5,1`, `seed=range(1,4)`). Each report goes to `<out>/<name>.json`; `out`
    (a folder here) defaults to `<ckpt stem>.eval-sweep/` beside the checkpoint."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except OverrideParseException as error:
        raise ConfigError(f"genlab eval -m: {str(error).splitlines()[0]}") from None
    choices = [
        [f"{arg.split('=', 1)[0]}={value}" for value in override.sweep_string_iterator()]
        if override.is_sweep_override()
        else [arg]
        for arg, override in zip(argv, parsed, strict=True)
    ]
    swept = [i for i, override in enumerate(parsed) if override.is_sweep_override()]
    if not swept:
        raise ConfigError("genlab eval -m needs a key=a,b,... to sweep; without one, drop -m")
    options, _ = parse_args(
        [arg for arg, override in zip(argv, parsed, strict=True) if not override.is_sweep_override()]
    )
    if options.out:
        folder = Path(options.out)
    else:
        _, ckpt = locate(ckpt=options.ckpt, run=options.run)
        folder = ckpt.with_name(f"{ckpt.stem}.eval-sweep")
    runs = []
    for combination in itertools.product(*choices):
        name = "_".join(combination[i] for i in swept).replace("/", "-")
        args = [arg for arg in combination if not arg.startswith("out=")]
        runs.append((name, [*args, f"out={folder / name}.json"]))
    return runs


def print_sweep(names: list[str], reports: list[dict[str, Any]]) -> None:
    """One row per swept combination, one column per metric every report has (per-class ones left out)."""
    from rich.console import Console
    from rich.table import Table

    shared = [m for m in reports[0]["metrics"] if all(m in r["metrics"] for r in reports)]
    columns = [m for m in shared if not re.search(r"/class\d", m)]
    table = Table(
        title=f"{reports[0]['experiment']} — {Path(reports[0]['checkpoint']).name}, {len(reports)} evaluations"
    )
    table.add_column("swept", no_wrap=True)
    for column in columns:  # "fid/classifier-mnist5k/500" -> "fid": the extractor and N are in the caption
        table.add_column(column.split("/")[0] if column.count("/") >= 2 else column, justify="right")
    suffixes = sorted({c.split("/", 1)[1] for c in columns if c.count("/") >= 2})
    table.caption = f"image metrics: <name>/{', '.join(suffixes)}" if suffixes else None
    for name, report in zip(names, reports, strict=True):
        table.add_row(name, *(f"{report['metrics'][c]:.4g}" for c in columns))
    console = Console(width=max(120, 12 * len(columns) + 40))
    console.print(table)
    console.print(f"reports in {Path(reports[0]['path']).parent}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\noptions (conf/eval.yaml):\n" + (conf_dir() / "eval.yaml").read_text())
        return
    try:
        if argv and argv[0] in ("-m", "--multirun"):
            runs = sweep(argv[1:])
            reports = []
            for name, args in runs:
                print(f"[{len(reports) + 1}/{len(runs)}] {name}", file=sys.stderr)
                reports.append(evaluate(*parse_args(args)))
            print_sweep([name for name, _ in runs], reports)
            return
        print_table(evaluate(*parse_args(argv)))
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
