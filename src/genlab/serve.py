"""`genlab serve run=RUN_DIR | ckpt=PATH [options] [overrides]`: one trained run over HTTP, on LitServe.

POST /predict draws images (`{"n": 4, "seed": 1}` -> base64 PNGs) or text (`{"prompt": "ROMEO.", ...}`);
POST /stream streams text as it is drawn; GET /health and GET /info (run, checkpoint, metrics, limits).
Concurrent requests are batched into one model call where that gives the same result as serving each alone;
a request with a `seed` gets exactly `genlab.load(run).sample/generate` with `torch.Generator().manual_seed(seed)`.
Requests are checked in the HTTP process before they reach a worker: a bad one gets HTTP 400 (413: too large)
with a one-line JSON `{"error": ...}`, and never reaches (or stops) the model. Options are conf/serve.yaml's keys.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genlab.config import command_options, conf_dir
from genlab.errors import ConfigError, GenlabError
from genlab.serve_requests import (
    IMAGE_FIELDS,
    TEXT_FIELDS,
    CheckRequests,
    RequestSpec,
)

try:  # the optional extra genlab[serve]; the worker classes below must live at module level (spawned workers)
    import litserve as ls

    _LitAPI: type = ls.LitAPI
except ImportError:
    ls, _LitAPI = None, object

CHOICES = {"weights": ("auto", "ema", "raw"), "device": ("auto", "cpu", "cuda")}
# numeric options: (least value, may be null); whole numbers except batch_timeout
NUMBERS = {"port": (1, False), "workers": (1, False), "max_batch_size": (1, False), "threads": (1, True),
           "timeout": (1, False), "batch_timeout": (0, False)}  # fmt: skip
RAW_STRINGS = ("run", "ckpt", "host")


def parse_args(argv: list[str]) -> tuple[DictConfig, list[str]]:
    """(conf/serve.yaml merged with the args naming its keys, the other args: overrides of the run config)."""
    options, run_overrides, given = command_options("serve", argv, RAW_STRINGS)
    for key, choices in CHOICES.items():
        if options[key] not in choices:
            raise ConfigError(f"{key}={options[key]!r}: choose one of {', '.join(choices)}")
    for key, (least, nullable) in NUMBERS.items():
        value = options[key]
        whole = key != "batch_timeout"
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value < least:
            what = "a whole number" if whole else "a number"
            raise ConfigError(f"{key}={value!r} must be {what} of at least {least}{' (or null)' * nullable}")
    for key, value in options.limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"limits.{key}={value!r} must be a whole number of at least 1")
    if options.port > 65535:
        raise ConfigError(f"port={options.port} must be at most 65535")
    return options, run_overrides


# ---- what a request may ask: checked in the HTTP process, before a worker sees it ---------------------------


# ---- the model side: run in the worker processes --------------------------------------------------------


def _generator(seed: int | None):
    import torch

    return torch.Generator().manual_seed(seed) if seed is not None else None


def draw_images(module: Any, requests: list[dict[str, Any]]) -> list[Any]:
    """One float tensor [n, C, H, W] in [0, 1] per request; each equals `module.sample(n, generator)` with
    the request's seed. An unconditional model with a deterministic decoder (VAE, GAN) decodes the latents
    of every request in one call; a diffusion model shares one call among requests without a seed."""
    import torch

    from genlab.generation.images import configure_sampler
    from genlab.models.base import LatentImageGenerator

    conditional = getattr(module, "num_classes", None) is not None
    if isinstance(module, LatentImageGenerator) and not hasattr(module, "make_sampler") and not conditional:
        latents = [module.draw_latents(r["n"], _generator(r["seed"])) for r in requests]
        images = module.sample_from_latents(torch.cat(latents))
        return list(images.float().clamp(0, 1).cpu().split([r["n"] for r in requests]))

    # the rest: one call per seeded or conditioned request, one per group of the others with equal steps
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(requests):
        free = r["seed"] is None and r["labels"] is None and r["guidance"] is None
        groups.setdefault(("free", r["steps"]) if free else i, []).append(i)
    out: list[Any] = [None] * len(requests)
    sampler = getattr(module, "sampler", None)
    for members in groups.values():
        first = requests[members[0]]
        extra = {}
        if first["labels"] is not None:
            extra["labels"] = torch.as_tensor(first["labels"], dtype=torch.long)
        if first["guidance"] is not None:
            extra["guidance"] = float(first["guidance"])
        if first["steps"] is not None:
            configure_sampler(module, None, first["steps"], None)
        try:
            total = sum(requests[i]["n"] for i in members)
            images = module.sample(total, generator=_generator(first["seed"]), **extra)
        finally:
            if first["steps"] is not None:
                module.sampler = sampler
        for i, part in zip(
            members, images.float().clamp(0, 1).cpu().split([requests[i]["n"] for i in members])
        ):
            out[i] = part
    return out


def generate_texts(module: Any, requests: list[dict[str, Any]]) -> list[str]:
    """The continuation of each request's prompt; each equals `module.generate(...)` with the request's seed.
    Greedy requests, and requests without a seed, that share prompt length and sampling settings are
    generated together in one call."""
    import torch

    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(requests):
        shared = r["seed"] is None or r["temperature"] == 0
        settings = (len(r["ids"]), r["max_new_tokens"], r["temperature"], r["top_k"], r["top_p"])
        groups.setdefault(settings if shared else i, []).append(i)
    out: list[str] = [""] * len(requests)
    for members in groups.values():
        first = requests[members[0]]
        prompts = torch.stack([torch.as_tensor(requests[i]["ids"], dtype=torch.long) for i in members])
        ids = module.generate(
            prompts, first["max_new_tokens"], first["temperature"], first["top_k"], first["top_p"],
            generator=_generator(first["seed"] if len(members) == 1 else None),
        )  # fmt: skip
        for i, row in zip(members, ids):
            out[i] = module.decode(row[len(requests[i]["ids"]) :])
    return out


def encode_images(images: Any, fmt: str) -> dict[str, Any]:
    """Images [n, C, H, W] in [0, 1] as base64 PNGs (one each, or one grid), or as nested lists of floats."""
    if fmt == "array":
        return {"images": images.tolist()}
    from torchvision.utils import make_grid, save_image

    def png(tensor: Any) -> str:
        buffer = io.BytesIO()
        save_image(tensor, buffer, format="png")  # the 8-bit rounding `genlab sample` writes too
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    if fmt == "grid":
        return {"grid": png(make_grid(images, nrow=math.ceil(math.sqrt(len(images))), padding=2))}
    return {"images": [png(image) for image in images]}


class GenlabAPI(_LitAPI):
    """POST /predict: a list of requests (batching on) or one request (off) -> one response each."""

    def __init__(self, location: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.location = location  # run_dir, ckpt, overrides, weights, threads, trust_*: plain values

    def setup(self, device: str) -> None:
        import torch

        self.module = _load(self.location, device)
        self.modality = _modality(self.module)
        threads = self.location["threads"] or self.module.run_config.get("threads")
        if threads:
            torch.set_num_threads(int(threads))

    def decode_request(self, request) -> dict[str, Any]:  # no annotation: LitServe then passes the JSON body
        fields = IMAGE_FIELDS if self.modality == "image" else TEXT_FIELDS
        request = {**fields, **request}  # checked already by CheckRequests
        if self.modality == "text":
            request["ids"] = self.module.encode(request["prompt"]).tolist()
        return request

    def predict(self, x: Any) -> Any:
        import torch

        requests = x if self.max_batch_size > 1 else [x]
        with torch.inference_mode():
            if self.modality == "image":
                images = draw_images(self.module, requests)
                out = [
                    {**encode_images(im, r["format"]), "seed": r["seed"]} for im, r in zip(images, requests)
                ]
            else:
                texts = generate_texts(self.module, requests)
                out = [{"text": text, "seed": r["seed"]} for text, r in zip(texts, requests)]
        for response in out:
            response["batch"] = len(requests)  # requests this model call served together
        return out if self.max_batch_size > 1 else out[0]

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


class StreamAPI(GenlabAPI):
    """POST /stream (language models): the continuation as plain text, piece by piece as it is drawn."""

    def predict(self, x: dict[str, Any]) -> Iterator[str]:
        import torch

        ids, text = [], ""
        prompt = torch.as_tensor(x["ids"], dtype=torch.long)
        for token in self.module.stream(
            prompt, x["max_new_tokens"], x["temperature"], x["top_k"], x["top_p"], _generator(x["seed"])
        ):
            ids.append(int(token))
            # decoding all ids each time keeps multi-token characters of a BPE tokenizer whole
            now = self.module.decode(ids)
            if len(now) > len(text) and not now.endswith("\ufffd"):
                yield now[len(text) :]
                text = now

    def encode_response(self, output: Iterator[str]) -> Iterator[str]:
        yield from output


def _load(location: dict[str, Any], device: str) -> Any:
    from genlab.runs.loading import check_targets, load_module, load_run_config

    run_dir, ckpt = Path(location["run_dir"]), Path(location["ckpt"])
    cfg = load_run_config(run_dir, location["overrides"])
    check_targets(cfg, location["trust_config"])
    return load_module(run_dir, ckpt, cfg, location["weights"], device, location["trust_checkpoint"])


def _modality(module: Any) -> str:
    from genlab.models.base import ImageGenerator, LanguageModel

    modality = getattr(module, "modality", None)
    if modality in ("image", "text"):
        return modality
    if modality is None and isinstance(module, (ImageGenerator, LanguageModel)):
        return "text" if isinstance(module, LanguageModel) else "image"
    raise ConfigError(
        f"{type(module).__name__} ({modality or 'no modality'}) cannot be served yet: genlab serve serves "
        "image generators and language models"
    )


def describe(
    module: Any, options: DictConfig, run_dir: Path, ckpt: Path
) -> tuple[RequestSpec, dict[str, Any]]:
    """What requests the loaded `module` accepts, and what GET /info tells about it."""
    import torch

    from genlab.generation.images import accepts

    modality = _modality(module)
    limits = dict(OmegaConf.to_container(options.limits))
    if modality == "image":
        num_classes = getattr(module, "num_classes", None)
        conditional = num_classes is not None and accepts(module.sample, "labels")
        spec = RequestSpec(
            modality, limits, conditional=conditional, num_classes=num_classes if conditional else None,
            guided=conditional and accepts(module.sample, "guidance") and hasattr(module, "make_sampler"),
            has_steps=hasattr(module, "make_sampler"),
        )  # fmt: skip
    else:
        spec = RequestSpec(modality, limits, run_dir=str(run_dir), _tokenizer=module.tokenizer)
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        record = {}
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    info = {
        "experiment": module.run_config.get("experiment_name") or record.get("experiment"),
        "family": type(module).__name__,
        "modality": modality,
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt.relative_to(run_dir)) if ckpt.is_relative_to(run_dir) else str(ckpt),
        "global_step": checkpoint.get("global_step"),
        "epoch": checkpoint.get("epoch"),
        "quantization": checkpoint.get("quantization"),
        "status": record.get("status"),
        "metrics": record.get("metrics") or {},
        "request_fields": IMAGE_FIELDS if modality == "image" else TEXT_FIELDS,
        "limits": limits,
        "batching": {"max_batch_size": options.max_batch_size, "batch_timeout": options.batch_timeout},
        "labels": {"num_classes": spec.num_classes} if spec.conditional else None,
    }
    return spec, info


def build_server(options: DictConfig, run_overrides: list[str]) -> tuple[Any, list[str]]:
    """The LitServer for the run `options` names (not started), and lines describing it."""
    if ls is None:
        raise ConfigError("genlab serve needs LitServe, which is not installed: pip install 'genlab[serve]'")
    from genlab.runs.loading import check_targets, load_run_config, locate, resolve_device

    run_dir, ckpt = locate(ckpt=options.ckpt, run=options.run)
    check_targets(load_run_config(run_dir, run_overrides), bool(options.trust_config))
    device = resolve_device(options.device)
    location = {
        "run_dir": str(run_dir), "ckpt": str(ckpt), "overrides": list(run_overrides), "weights": options.weights,
        "threads": options.threads, "trust_config": bool(options.trust_config),
        "trust_checkpoint": bool(options.trust_checkpoint),
    }  # fmt: skip
    # load once here: a run that cannot be served fails now in one line, not later inside a worker
    module = _load(location, "cpu")
    spec, info = describe(module, options, run_dir, ckpt)
    del module
    batching = {"max_batch_size": options.max_batch_size, "batch_timeout": options.batch_timeout}
    apis = [GenlabAPI(location, api_path="/predict", **batching)]
    paths = ["POST /predict"]
    if spec.modality == "text":
        apis.append(StreamAPI(location, api_path="/stream", stream=True))
        paths.append("POST /stream")
    server = ls.LitServer(
        apis,
        accelerator=device,
        devices=1,
        workers_per_device=options.workers,
        timeout=options.timeout,
        model_metadata=info,
        middlewares=[(CheckRequests, {"spec": spec, "paths": tuple(api.api_path for api in apis)})],
    )
    where = f"http://{options.host}:{options.port}"
    lines = [
        f"serving {info['family']} ({info['experiment']}, step {info['global_step']}) from {ckpt} on {device}",
        f"{where}: {', '.join(paths)}, GET /health, GET /info; max_batch_size={options.max_batch_size}, "
        f"workers={options.workers}",
    ]
    return server, lines


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as uvicorn: closed connections do not count
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({error.strerror or error}): choose another port= or host="
            ) from None


def _interrupt(main_pid: int, signum: int, frame: Any) -> None:
    """SIGTERM: LitServe's Ctrl-C shutdown in the main process; a quiet exit in its forked HTTP server."""
    if os.getpid() != main_pid:
        raise SystemExit(0)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\noptions (conf/serve.yaml):\n" + (conf_dir() / "serve.yaml").read_text())
        return
    try:
        options, run_overrides = parse_args(argv)
        _check_port(options.host, options.port)
        server, lines = build_server(options, run_overrides)
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    for line in lines:
        print(line, flush=True)
    signal.signal(
        signal.SIGTERM, functools.partial(_interrupt, os.getpid())
    )  # `kill`: the shutdown of Ctrl-C, which stops the workers too
    server.run(host=options.host, port=options.port, generate_client_file=False, log_level=options.log_level)
