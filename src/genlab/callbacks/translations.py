"""Translations during training: a few source/hypothesis/reference triples of the validation split after each
validation (`<run dir>/samples/translations_step<N>.txt`, and TensorBoard text when attached), and at test time
corpus BLEU and chrF of beam and greedy decoding on the test split beside the copy baseline (logged as
`test/bleu`, `test/greedy_bleu`, `test/copy_bleu`, ... in run.json; the texts in samples/test_translations.tsv). Works for any module with `modality`
"seq2seq" (a `translate` method) and a datamodule with a tokenizer and `pairs`."""

from __future__ import annotations

import csv
import itertools
import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from genlab.errors import ConfigError

log = logging.getLogger("genlab.translations")


class Translations(L.Callback):
    """Writes sample translations each `every_n_epochs` validations and scores the whole test split."""

    def __init__(
        self,
        num_samples: int = 4,
        every_n_epochs: int = 1,
        beam_size: int = 4,
        length_penalty: float = 1.0,
        greedy: bool = True,
        max_new_tokens: int | None = None,
    ):
        """
        Args:
            num_samples: validation pairs translated after each validation (the same ones each time, spread
                evenly over the split).
            every_n_epochs: write them after the validation of every n-th epoch.
            beam_size: beam of the test translations and of the samples (1: greedy).
            length_penalty: beam search ranks by sum log p / length ** length_penalty.
            greedy: also score greedy decoding at test time (`test/greedy_bleu`), when beam_size > 1.
            max_new_tokens: longest translation; null: the model's block_size - 1.
        """
        super().__init__()
        if int(beam_size) < 1 or int(num_samples) < 0 or int(every_n_epochs) < 1:
            raise ConfigError(
                "callbacks.translations: beam_size and every_n_epochs must be at least 1, num_samples at least 0"
            )
        self.num_samples = int(num_samples)
        self.every_n_epochs = int(every_n_epochs)
        self.beam_size = int(beam_size)
        self.length_penalty = float(length_penalty)
        self.greedy = bool(greedy)
        self.max_new_tokens = max_new_tokens

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "modality", None) != "seq2seq":
            raise ConfigError(
                f"callbacks.translations needs a sequence-to-sequence model, got {type(pl_module).__name__}: "
                "remove it with ~callbacks.translations"
            )
        if not hasattr(trainer.datamodule, "pairs"):
            raise ConfigError("callbacks.translations needs a parallel datamodule (e.g. data=folio_modern)")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not self.num_samples or (epoch + 1) % self.every_n_epochs != 0:
            return
        from genlab.metrics.translation import translate_batches

        datamodule = trainer.datamodule
        pairs = datamodule.pairs["val"]
        chosen = sorted(
            {round(i * (len(pairs) - 1) / max(1, self.num_samples - 1)) for i in range(self.num_samples)}
        )
        sources, hypotheses, references = translate_batches(
            pl_module,
            [datamodule.batch_of("val", chosen)],
            datamodule.tokenizer,
            self.beam_size,
            self.length_penalty,
            self.max_new_tokens,
        )
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        blocks = [
            f"===== {pairs[i].play} #{i} =====\nsource:     {s}\nhypothesis: {h}\nreference:  {r}"
            for i, s, h, r in zip(chosen, sources, hypotheses, references, strict=True)
        ]
        out_dir = Path(trainer.default_root_dir) / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        header = f"# epoch {epoch}, step {step}, beam {self.beam_size}, length_penalty {self.length_penalty}"
        (out_dir / f"translations_step{step:06d}.txt").write_text(
            header + "\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8"
        )
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                text = "\n\n".join(
                    "    " + b.replace("\n", "\n    ") for b in blocks
                )  # a markdown code block
                logger.experiment.add_text("samples/translations", text, global_step=step)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from genlab.metrics.translation import evaluate_translations

        loader = trainer.datamodule.test_dataloader()
        # as many batches as the test loop ran (trainer.limit_test_batches), every rank all of them: corpus BLEU
        # is not a mean of per-batch values
        limit = trainer.limit_test_batches
        n = int(len(loader) * limit) if isinstance(limit, float) else min(int(limit), len(loader))
        metrics, seconds, texts = evaluate_translations(
            pl_module,
            itertools.islice(loader, max(1, n)),
            trainer.datamodule.tokenizer,
            prefix="test",
            beam_size=self.beam_size,
            length_penalty=self.length_penalty,
            greedy=self.greedy,
            max_new_tokens=self.max_new_tokens,
        )
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=False, on_epoch=True)
        log.info("test translations: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
        if trainer.is_global_zero:  # every test translation, for reading the fixes and the failures
            out_dir = Path(trainer.default_root_dir) / "samples"
            out_dir.mkdir(parents=True, exist_ok=True)
            with open(out_dir / "test_translations.tsv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f, delimiter="\t")
                writer.writerow(list(texts))
                writer.writerows(zip(*texts.values(), strict=True))
