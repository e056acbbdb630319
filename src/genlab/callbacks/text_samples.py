"""Text samples during training: continuations of a fixed prompt as a table (step, sample, prompt, continuation)
in `<run dir>/samples/text_step<N>.csv` beside a readable `epoch_<E>.txt`, and sent to W&B (a wandb.Table) or
TensorBoard (text) when those loggers are attached. Works for any module implementing the LanguageModel protocol."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from genlab.errors import ConfigError, GenlabError
from genlab.models.base import LanguageModel

COLUMNS = ["step", "sample", "prompt", "continuation"]


class TextSamples(L.Callback):
    """Every `every_n_epochs` validation epochs, write `num_samples` continuations of `prompt`.

    Noise comes from a generator seeded with `seed` each time, so successive files show the same draws
    as the model learns; the global RNG is left untouched.
    """

    def __init__(
        self,
        prompt: str = "ROMEO:",
        max_new_tokens: int = 500,
        num_samples: int = 2,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        every_n_epochs: int = 1,
        seed: int = 0,
    ):
        """
        Args:
            prompt: text the samples continue; empty starts from a newline.
            max_new_tokens: tokens generated after the prompt.
            num_samples: continuations per file, generated as one batch.
            temperature: softmax temperature (0 decodes greedily, below 1 sharpens).
            top_k: keep only the k most likely tokens at each step (None: all).
            top_p: nucleus sampling, keep the most likely tokens holding this much mass (None: all).
            every_n_epochs: write samples after the validation of every n-th epoch.
            seed: seed of the generator the tokens are drawn with.
        """
        super().__init__()
        self.prompt = prompt or "\n"
        self.max_new_tokens = max_new_tokens
        self.num_samples = num_samples
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.every_n_epochs = every_n_epochs
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, LanguageModel):
            raise ConfigError(
                f"callbacks.text_samples needs a language model, got {type(pl_module).__name__}: "
                "remove it with ~callbacks.text_samples"
            )
        if getattr(trainer.datamodule, "tokenizer", None) is None:
            raise ConfigError(
                "callbacks.text_samples needs a text datamodule with a tokenizer (e.g. data=shakespeare)"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or (epoch + 1) % self.every_n_epochs != 0:
            return
        tokenizer = trainer.datamodule.tokenizer
        try:
            prompt_ids = torch.as_tensor(tokenizer.encode(self.prompt), dtype=torch.long)
        except GenlabError as err:
            raise ConfigError(f"callbacks.text_samples.prompt={self.prompt!r}: {err}") from err
        # every rank samples (same draws, cheap): with a sharded strategy the forward pass is collective
        generator = torch.Generator().manual_seed(self.seed)
        ids = pl_module.generate(
            prompt_ids.repeat(self.num_samples, 1),
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            generator=generator,
        )
        if not trainer.is_global_zero:
            return
        texts = [tokenizer.decode(row.tolist()) for row in ids.cpu()]
        continuations = [tokenizer.decode(row[len(prompt_ids) :].tolist()) for row in ids.cpu()]
        step = trainer.global_step
        rows = [[step, i, self.prompt, text] for i, text in enumerate(continuations)]

        out_dir = Path(trainer.default_root_dir) / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        header = (
            f"epoch {epoch}, step {trainer.global_step}, temperature {self.temperature}, seed {self.seed}"
        )
        body = "\n\n".join(f"===== sample {i} =====\n{text}" for i, text in enumerate(texts))
        (out_dir / f"epoch_{epoch:03d}.txt").write_text(f"# {header}\n\n{body}\n", encoding="utf-8")
        with open(out_dir / f"text_step{step:06d}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([COLUMNS, *rows])  # quoted fields keep the continuations' line breaks
        self._log(trainer, texts, rows)

    def _log(self, trainer: L.Trainer, texts: list[str], rows: list[list]) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # TensorBoard renders markdown: indenting makes a code block that keeps the line breaks
                for i, text in enumerate(texts):
                    block = "\n".join("    " + line for line in text.splitlines())
                    logger.experiment.add_text(f"samples/text_{i}", block, global_step=step)
            elif isinstance(logger, WandbLogger):
                # a wandb.Table (Lightning imports wandb here, only for this logger)
                logger.log_text("samples/text", columns=COLUMNS, data=rows, step=step)
