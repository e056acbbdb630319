"""What a `genlab serve` request may ask, checked in the HTTP process before it reaches a model worker: a bad
request gets HTTP 400 (413: too large) with a one-line JSON `{"error": ...}`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from genlab.errors import GenlabError

IMAGE_FORMATS = ("png", "grid", "array")
# the fields of a request and their defaults, per modality
IMAGE_FIELDS = {"n": 1, "seed": None, "labels": None, "guidance": None, "steps": None, "format": "png"}
TEXT_FIELDS = {"prompt": "\n", "max_new_tokens": 200, "temperature": 1.0, "top_k": None, "top_p": None,
               "seed": None}  # fmt: skip


class RequestError(Exception):
    """A request the server refuses: HTTP `status` with a one-line message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class RequestSpec:
    """What the served model accepts, known before the workers start (plain values: it is pickled)."""

    modality: str  # "image" | "text"
    limits: dict[str, int]
    conditional: bool = False  # image: takes labels
    num_classes: int | None = None
    guided: bool = False  # image: takes a guidance scale
    has_steps: bool = False  # image: a diffusion sampler whose step count a request may change
    run_dir: str | None = None  # text: where the tokenizer is
    _tokenizer: Any = field(default=None, repr=False, compare=False)

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from genlab.data.tokenizers import load_tokenizer

            self._tokenizer = load_tokenizer(self.run_dir)
        return self._tokenizer


def _whole(payload: dict, key: str, least: int, most: int | None = None, limit: str | None = None) -> None:
    value = payload[key]
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be a whole number, not {json.dumps(value)}")
    if value < least:
        raise RequestError(f"{key}={value} must be at least {least}")
    if most is not None and value > most:
        where = f" (the server's limits.{limit})" if limit else ""
        raise RequestError(f"{key}={value} is above the limit of {most}{where}; ask for at most {most}")


def _number(payload: dict, key: str, least: float, most: float | None = None) -> None:
    value = payload[key]
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{key} must be a number, not {json.dumps(value)}")
    if value < least or (most is not None and value > most):
        bounds = f"between {least:g} and {most:g}" if most is not None else f"at least {least:g}"
        raise RequestError(f"{key}={value} must be {bounds}")


def check_request(body: bytes, spec: RequestSpec) -> dict[str, Any]:
    """The request `body` (JSON) with defaults filled in, or a RequestError saying what is wrong."""
    if len(body) > spec.limits["max_body_bytes"]:
        raise RequestError(
            f"the request body has {len(body)} bytes, above limits.max_body_bytes={spec.limits['max_body_bytes']}",
            413,
        )
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise RequestError('the request body is not JSON: send an object such as {"seed": 0}') from None
    if not isinstance(payload, dict):
        raise RequestError(f"the request body must be a JSON object, not {type(payload).__name__}")
    fields = IMAGE_FIELDS if spec.modality == "image" else TEXT_FIELDS
    given = set(payload)
    unknown = sorted(given - set(fields))
    if unknown:
        raise RequestError(
            f"unknown field {unknown[0]!r}: this {spec.modality} model takes {', '.join(fields)}"
        )
    payload = {**fields, **payload}
    if spec.modality == "text" and "max_new_tokens" not in given:  # the default stays within the limit
        payload["max_new_tokens"] = min(payload["max_new_tokens"], spec.limits["max_new_tokens"])
    _whole(payload, "seed", 0, 2**63 - 1)
    limits = spec.limits
    if spec.modality == "image":
        _check_image(payload, spec, limits)
    else:
        _check_text(payload, spec, limits)
    return payload


def _check_image(payload: dict, spec: RequestSpec, limits: dict[str, int]) -> None:
    if payload["n"] is None:
        raise RequestError("n must be a whole number, not null")
    _whole(payload, "n", 1, limits["max_n"], "max_n")
    if payload["format"] not in IMAGE_FORMATS:
        raise RequestError(
            f"format={json.dumps(payload['format'])}: choose one of {', '.join(IMAGE_FORMATS)}"
        )
    if payload["steps"] is not None and not spec.has_steps:
        raise RequestError(
            "steps: this model has no diffusion sampler whose steps could change; leave it out"
        )
    _whole(payload, "steps", 1, limits["max_steps"], "max_steps")
    for key in ("labels", "guidance"):
        if payload[key] is not None and not spec.conditional:
            raise RequestError(f"{key}: this model is unconditional (it takes no {key}); leave them out")
    if payload["guidance"] is not None and not spec.guided:
        raise RequestError("guidance: only diffusion models take a guidance scale; leave it out")
    _number(payload, "guidance", 0)
    labels = payload["labels"]
    if labels is not None:
        values = labels if isinstance(labels, list) else [labels]
        if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise RequestError(f"labels must be a class index or a list of them, not {json.dumps(labels)}")
        if isinstance(labels, list) and len(labels) != payload["n"]:
            raise RequestError(
                f"{len(labels)} labels for n={payload['n']} images: give one, or one per image"
            )
        if spec.num_classes is not None and not all(0 <= v < spec.num_classes for v in values):
            raise RequestError(f"labels: this model has classes 0 to {spec.num_classes - 1}")


def _check_text(payload: dict, spec: RequestSpec, limits: dict[str, int]) -> None:
    prompt = payload["prompt"]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(f"prompt must be a non-empty string, not {json.dumps(prompt)}")
    if len(prompt) > limits["max_prompt_chars"]:
        raise RequestError(
            f"the prompt has {len(prompt)} characters, above limits.max_prompt_chars={limits['max_prompt_chars']}"
        )
    if payload["max_new_tokens"] is None:
        raise RequestError("max_new_tokens must be a whole number, not null")
    _whole(payload, "max_new_tokens", 1, limits["max_new_tokens"], "max_new_tokens")
    if payload["temperature"] is None:
        raise RequestError("temperature must be a number, not null")
    _number(payload, "temperature", 0)
    _whole(payload, "top_k", 1)
    _number(payload, "top_p", 0, 1)
    if payload["top_p"] == 0:
        raise RequestError("top_p=0 keeps no token: give a share of probability above 0, at most 1")
    try:
        spec.tokenizer().encode(prompt)
    except GenlabError as error:  # a char tokenizer names the characters it does not know
        raise RequestError(str(error).splitlines()[0]) from None


class CheckRequests:
    """ASGI middleware: reads the body of each POST to the model's paths, refuses a bad one in one JSON line
    and hands a good one on (body replayed), so that a worker only ever decodes requests it can serve."""

    def __init__(self, app: Any, spec: RequestSpec, paths: tuple[str, ...]):
        self.app, self.spec, self.paths = app, spec, paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        chunks, more, size = [], True, 0
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.spec.limits["max_body_bytes"]:
                break  # no need to read on: it is refused
        body = b"".join(chunks)
        try:
            check_request(body, self.spec)
        except RequestError as error:
            from starlette.responses import JSONResponse

            await JSONResponse({"error": str(error)}, status_code=error.status)(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        # the body is JSON whatever the client called it (`curl -d` says it is a form): LitServe reads it as such
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, replay, send)
