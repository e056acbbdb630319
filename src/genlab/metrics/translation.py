"""Corpus BLEU and chrF (sacrebleu's definitions) of a sequence-to-sequence model's translations, beside the copy
baseline (the source text itself as the hypothesis), over batches of an evaluation loader."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """{"bleu": corpus BLEU, "chrf": corpus chrF} with sacrebleu's defaults (13a tokenisation, one reference)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
    }


def translate_batches(
    module: Any,
    batches: Iterable[dict[str, Any]],
    tokenizer: Any,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    max_new_tokens: int | None = None,
) -> tuple[list[str], list[str], list[str]]:
    """(sources, hypotheses, references) of every pair in `batches` (dicts with `src` ids, `src_text`, `tgt_text`)."""
    specials = {module.pad_id, module.bos_id, module.eos_id}
    sources, hypotheses, references = [], [], []
    for batch in batches:
        out = module.translate(
            batch["src"], max_new_tokens, beam_size=beam_size, length_penalty=length_penalty
        )
        for row in out.tolist():
            hypotheses.append(tokenizer.decode([i for i in row if i not in specials]))
        sources += list(batch["src_text"])
        references += list(batch["tgt_text"])
    return sources, hypotheses, references


def evaluate_translations(
    module: Any,
    batches: Iterable[dict[str, Any]],
    tokenizer: Any,
    prefix: str = "test",
    beam_size: int = 4,
    length_penalty: float = 1.0,
    greedy: bool = True,
    max_new_tokens: int | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, list[str]]]:
    """BLEU and chrF of `module` on `batches` as `{prefix}/bleu`, `{prefix}/chrf` (beam search with `beam_size`;
    greedy when 1), `{prefix}/greedy_bleu`, `{prefix}/greedy_chrf` (when `greedy` and beam_size > 1) and the copy
    baseline `{prefix}/copy_bleu`, `{prefix}/copy_chrf`. Returns (metrics, seconds per decoder, texts), the
    texts being lists in the loader's order: `source`, `reference`, `beam<K>` and `greedy`."""
    batches = list(batches)
    metrics: dict[str, float] = {}
    seconds: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    decoders = [("", beam_size)] + ([("greedy_", 1)] if greedy and beam_size > 1 else [])
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            for name, size in decoders:
                start = time.perf_counter()
                sources, hypotheses, references = translate_batches(
                    module, batches, tokenizer, size, length_penalty, max_new_tokens
                )
                decoder = "greedy" if size == 1 else f"beam{size}"
                seconds[f"{decoder}_decode"] = time.perf_counter() - start
                for metric, value in corpus_scores(hypotheses, references).items():
                    metrics[f"{prefix}/{name}{metric}"] = value
                texts |= {"source": sources, "reference": references, decoder: hypotheses}
    finally:
        module.train(was_training)
    for metric, value in corpus_scores(texts["source"], texts["reference"]).items():
        metrics[f"{prefix}/copy_{metric}"] = value
    return metrics, seconds, texts
