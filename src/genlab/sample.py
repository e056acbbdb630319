"""`genlab sample run=RUN_DIR | ckpt=PATH [options] [overrides]`: images, interpolations or text from a trained run.

Loads the checkpoint (weights_only) into the module built from the run's own stored config (EMA weights where
the family keeps them). Image models write a PNG grid and/or one PNG per sample; `mode=interpolate` writes a
grid of paths between latents (VAE, GAN, DDIM) or, for a VAE with `source=data`, between real images.
Language models stream continuations of a prompt to stdout and write them to a file. Options are
conf/sample.yaml's keys; any other `key=value` overrides the run's config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from genlab.config import command_options, conf_dir
from genlab.errors import ConfigError, GenlabError

CHOICES = {
    "mode": ("sample", "interpolate"),
    "format": ("grid", "files", "both"),
    "weights": ("auto", "ema", "raw"),
    "device": ("auto", "cpu", "cuda"),
    "source": ("noise", "data"),
}
# numeric options: (whole number?, least value, may be null)
NUMBERS = {
    "n": (True, 1, False), "batch_size": (True, 1, False), "rows": (True, 1, False), "points": (True, 1, False),
    "max_new_tokens": (True, 1, False), "num_samples": (True, 1, False), "seed": (True, 0, False),
    "temperature": (False, 0, False), "steps": (True, 1, True), "nrow": (True, 1, True), "top_k": (True, 1, True),
    "eta": (False, 0, True), "top_p": (False, 0, True), "guidance": (False, 0, True),
    "beam_size": (True, 1, False), "length_penalty": (False, 0, False),
}  # fmt: skip
# options that only mean something for one kind of model: naming one for the other kind is a mistake
IMAGE_ONLY = ("mode", "n", "format", "nrow", "batch_size", "labels", "guidance", "sampler", "steps", "eta", "rows",
              "points", "source", "data_split")  # fmt: skip
TEXT_ONLY = (
    "prompt",
    "prompt_file",
    "max_new_tokens",
    "num_samples",
    "temperature",
    "top_k",
    "top_p",
    "stream",
)
# taken as typed, not parsed as YAML values
RAW_STRINGS = ("prompt", "out", "run", "ckpt", "prompt_file", "src")
SEQ2SEQ_ONLY = ("src", "beam_size", "length_penalty")  # seq2seq models (generation/translation.py)


def parse_args(argv: list[str]) -> tuple[DictConfig, list[str], set[str]]:
    """(conf/sample.yaml merged with the args naming its keys, the other args, the option names given)."""
    options, run_overrides, given = command_options("sample", argv, RAW_STRINGS)
    for key, choices in CHOICES.items():
        if options[key] not in choices:
            raise ConfigError(f"{key}={options[key]!r}: choose one of {', '.join(choices)}")
    for key, (whole, least, nullable) in NUMBERS.items():
        value = options[key]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value < least:
            what = "a whole number" if whole else "a number"
            raise ConfigError(f"{key}={value!r} must be {what} of at least {least}{' (or null)' * nullable}")
    if options.top_p is not None and options.top_p > 1:
        raise ConfigError(f"top_p={options.top_p} must be at most 1 (the share of probability kept)")
    if options.prompt is not None and options.prompt_file is not None:
        raise ConfigError("give prompt= or prompt_file=, not both")
    if options.prompt_file is not None and not Path(options.prompt_file).is_file():
        raise ConfigError(f"prompt_file={options.prompt_file} does not exist")
    return options, run_overrides, set(given)


def sample(options: DictConfig, run_overrides: list[str], given: set[str]) -> tuple[list[str], bool]:
    """Load the run, write what `options` asks for; returns the lines saying where it went, and whether
    text was streamed to stdout (the lines then go to stderr)."""
    from genlab.runs.loading import check_targets, load_run_config, locate

    run_dir, ckpt = locate(ckpt=options.ckpt, run=options.run)
    cfg = load_run_config(run_dir, run_overrides)
    check_targets(cfg, bool(options.trust_config))

    import torch  # heavy: after the arguments and config are known to be good

    from genlab.generation import images, interpolation
    from genlab.generation.text import read_prompt, write_samples
    from genlab.models.base import ImageGenerator, LanguageModel
    from genlab.runs.loading import load_module, resolve_device

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(options.device)
    module = load_module(run_dir, ckpt, cfg, options.weights, device, bool(options.trust_checkpoint))
    if getattr(module, "modality", None) == "seq2seq":
        from genlab.generation.translation import write_translations

        return write_translations(module, options, given, run_dir), True
    if given & set(SEQ2SEQ_ONLY):
        wrong = ", ".join(sorted(given & set(SEQ2SEQ_ONLY)))
        name = type(module).__name__
        raise ConfigError(f"{wrong}: only for sequence-to-sequence models, not {name}; leave it out")
    if not isinstance(module, (LanguageModel, ImageGenerator)):
        raise ConfigError(f"{type(module).__name__} is neither an image generator nor a language model")
    kind = "text" if isinstance(module, LanguageModel) else "images"
    wrong = sorted(given & set(IMAGE_ONLY if kind == "text" else TEXT_ONLY))
    if wrong:
        other = "image models" if kind == "text" else "language models"
        raise ConfigError(
            f"{', '.join(wrong)}: only for {other}, and {type(module).__name__} makes {kind}; leave "
            f"{'it' if len(wrong) == 1 else 'them'} out (genlab sample --help lists the options)"
        )
    name = "text" if kind == "text" else options.mode + ("_data" if options.source == "data" else "")
    out = Path(options.out) if options.out else run_dir / "samples" / f"{name}_seed{options.seed}"
    generator = torch.Generator().manual_seed(int(options.seed))
    if kind == "text":
        prompt = read_prompt(options.prompt, options.prompt_file)
        sampling = {k: options[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p")}
        lines = write_samples(module, prompt, out, options.num_samples, options.stream, generator, **sampling)
        return lines, bool(options.stream)

    interpolate = options.mode == "interpolate"
    weights = f" ({'EMA' if module.use_ema else 'raw'} weights)" if getattr(module, "has_ema", False) else ""
    lines = [f"{type(module).__name__}{weights} from {ckpt} on {device}"]
    described = images.configure_sampler(module, options.sampler, options.steps, options.eta, interpolate)
    lines += [f"sampler: {described}"] if described else []
    if not interpolate:
        labels, nrow = images.labels_for(module, options.labels, options.n, options.nrow)
        n = options.n if labels is None else len(labels)
        drawn = images.draw(module, n, options.batch_size, generator, labels, options.guidance)
        paths = images.save(drawn, out, options.format, nrow)
        where = paths[0] if len(paths) == 1 else f"{out} ({', '.join(p.name for p in paths[:2])} ...)"
        return lines + [f"wrote {len(drawn)} samples to {where}"], False
    if options.source == "data":
        from genlab.build import build_datamodule

        real = build_datamodule(cfg).real_images(options.data_split)
        rows = interpolation.data_paths(module, real, options.rows, options.points, options.seed)
    else:
        pairs = interpolation.seed_pairs(options.seed, options.rows)
        rows = interpolation.latent_paths(module, pairs, options.points, options.batch_size)
    path = images.save(rows.flatten(0, 1), out, "grid", options.nrow or options.points)[0]
    return lines + [f"wrote {options.rows} interpolation rows of {options.points} to {path}"], False


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(
            __doc__.strip() + "\n\noptions (conf/sample.yaml):\n" + (conf_dir() / "sample.yaml").read_text()
        )
        return
    try:
        options, run_overrides, given = parse_args(argv)
        lines, streamed = sample(options, run_overrides, given)
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    for line in lines:  # beside streamed text (stdout, to pipe on), the report goes to stderr
        print(line, file=sys.stderr if streamed else sys.stdout)
