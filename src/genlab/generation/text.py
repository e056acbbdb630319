"""Text from a language model: continuations of a prompt, streamed token by token, with tokens per second."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genlab.errors import ConfigError, GenlabError

REPLACEMENT = "\ufffd"  # what a byte-level decoder shows for a character whose bytes have not all arrived


def encode_prompt(tokenizer: Any, prompt: str) -> torch.Tensor:
    """The prompt's ids (T,); a prompt the tokenizer cannot encode is a one-line ConfigError."""
    try:
        ids = tokenizer.encode(prompt)
    except GenlabError as err:
        raise ConfigError(f"prompt={prompt!r}: {err}") from None
    if not ids:
        raise ConfigError("the prompt encodes to no tokens: give at least one character")
    return torch.as_tensor(ids, dtype=torch.long)


def continuation(
    module: Any,
    tokenizer: Any,
    prompt_ids: torch.Tensor,
    write: Callable[[str], None] | None = None,
    generator: torch.Generator | None = None,
    **sampling: Any,
) -> tuple[str, int, float]:
    """(text of the new tokens, their number, seconds) for one continuation of `prompt_ids`; `write` gets the
    text as it grows (decoded from all new tokens so far, so multi-byte characters come out whole)."""
    new: list[int] = []
    shown = ""
    start = time.perf_counter()
    for token in module.stream(prompt_ids, generator=generator, **sampling):
        new.append(int(token))
        text = tokenizer.decode(new)
        if write is not None and not text.endswith(REPLACEMENT) and len(text) > len(shown):
            write(text[len(shown) :])
            shown = text
    seconds = time.perf_counter() - start
    text = tokenizer.decode(new)
    if write is not None and len(text) > len(shown):
        write(text[len(shown) :])
    return text, len(new), seconds


def read_prompt(prompt: str | None, prompt_file: str | None) -> str:
    """The prompt from `prompt_file`, or as typed on a command line ("\\n" is a line break; none: a newline)."""
    if prompt_file is not None:
        return Path(prompt_file).read_text(encoding="utf-8")
    return "\n" if prompt is None else prompt.replace("\\n", "\n").replace("\\t", "\t")


def write_samples(
    module: Any,
    prompt: str,
    out: Path,
    num_samples: int,
    stream: bool,
    generator: torch.Generator,
    **sampling: Any,
) -> list[str]:
    """`num_samples` continuations of `prompt`, one after another, streamed to stdout while they are
    generated (if `stream`), then written to `out`/samples.txt; returns the report lines."""
    prompt_ids = encode_prompt(module.tokenizer, prompt)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    texts, tokens, seconds = [], 0, 0.0
    for i in range(num_samples):
        if stream:
            write(("\n" if i else "") + (f"===== sample {i} =====\n" if num_samples > 1 else "") + prompt)
        new, n, s = continuation(
            module, module.tokenizer, prompt_ids, write if stream else None, generator, **sampling
        )
        texts.append(prompt + new)
        tokens, seconds = tokens + n, seconds + s
    if stream:
        write("\n")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "samples.txt"
    if num_samples == 1:
        body = texts[0]
    else:
        body = "\n\n".join(f"===== sample {i} =====\n{text}" for i, text in enumerate(texts))
    path.write_text(body + "\n", encoding="utf-8")
    rate = f"{tokens / seconds:.1f}" if seconds > 0 else "inf"
    return [
        f"{tokens} tokens in {seconds:.2f} s ({rate} tokens/s)",
        f"wrote {num_samples} sample{'s' * (num_samples > 1)} to {path}",
    ]
