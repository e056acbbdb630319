"""`genlab sample` for sequence-to-sequence models: translations of the lines of `src=`, printed and saved."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError, GenlabError

# conf/sample.yaml options a translation uses; naming any other (n=, prompt=, temperature=...) is a mistake
OPTIONS = {"run", "ckpt", "out", "seed", "device", "weights", "trust_checkpoint", "trust_config", "src",
           "beam_size", "length_penalty", "max_new_tokens"}  # fmt: skip


def write_translations(module: Any, options: Any, given: set[str], run_dir: Path) -> list[str]:
    """Translate each line of `options.src`, print the translations to stdout (one per line, to pipe on) and
    write source/translation pairs to `<out>/translations.txt`; returns the report lines."""
    wrong = sorted(given - OPTIONS)
    if wrong:
        raise ConfigError(
            f"{', '.join(wrong)}: not an option for {type(module).__name__}, a sequence-to-sequence model; it "
            "takes src=, beam_size=, length_penalty=, max_new_tokens= (genlab sample --help lists them)"
        )
    if not options.src or not options.src.strip():
        raise ConfigError('give the text to translate: src="Haue you had quiet Guard?" (lines split by \\n)')
    lines = [line.strip() for line in options.src.replace("\\n", "\n").splitlines() if line.strip()]
    start = time.perf_counter()
    try:
        translations = module.translate_text(
            lines,
            beam_size=int(options.beam_size),
            length_penalty=float(options.length_penalty),
            max_new_tokens=int(options.max_new_tokens) if "max_new_tokens" in given else None,
        )
    except GenlabError as err:  # a character the vocabulary lacks, a line too long for the model
        raise ConfigError(f"src: {err}") from None
    seconds = time.perf_counter() - start
    for translation in translations:
        sys.stdout.write(translation + "\n")
    sys.stdout.flush()
    out = Path(options.out) if options.out else run_dir / "samples" / "translations"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "translations.txt"
    path.write_text(
        "".join(f"{s}\n=> {t}\n\n" for s, t in zip(lines, translations, strict=True)), encoding="utf-8"
    )
    decoder = "greedy" if options.beam_size == 1 else f"beam {options.beam_size}"
    return [f"{len(lines)} line(s) translated ({decoder}) in {seconds:.2f} s; written to {path}"]
