"""TextSamples: a table (CSV) and a readable file of continuations per validation epoch, text sent to TensorBoard,
a wandb.Table to W&B (offline, no credentials)."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from genlab.callbacks.text_samples import TextSamples
from genlab.data.text import TextDataModule
from genlab.errors import ConfigError
from genlab.models.lm import CausalLM
from genlab.nets.gpt import GPT

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 40


def run(tmp_path, module, callback, logger=False):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    dm = TextDataModule(
        corpus="text_files",
        path=str(tmp_path / "corpus.txt"),
        block_size=16,
        batch_size=4,
        batches_per_epoch=3,
        max_samples=4,
    )
    dm.setup("fit")
    if module is None:
        torch.manual_seed(0)
        module = CausalLM(GPT(dm.vocab_size, 16, n_layer=1, n_head=1, n_embd=16), optimizer=torch.optim.Adam)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        max_epochs=-1,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        callbacks=[callback],
    )
    trainer.fit(module, datamodule=dm)
    return dm


def test_writes_one_file_per_validation_epoch(tmp_path):
    callback = TextSamples(prompt="ROMEO:", max_new_tokens=25, num_samples=2, every_n_epochs=1, seed=3)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    run(tmp_path, None, callback, logger=logger)
    files = sorted((tmp_path / "samples").glob("epoch_*.txt"))
    assert [f.name for f in files] == ["epoch_000.txt", "epoch_001.txt"]
    text = files[-1].read_text(encoding="utf-8")
    assert text.startswith("# epoch 1, step 6")
    samples = text.split("===== sample ")[1:]
    assert len(samples) == 2
    for sample in samples:
        body = sample.split("=====\n", 1)[1].rstrip("\n")
        assert body.startswith("ROMEO:") and len(body) >= len("ROMEO:") + 20
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))

    tables = sorted((tmp_path / "samples").glob("text_step*.csv"))
    assert [f.name for f in tables] == ["text_step000003.csv", "text_step000006.csv"]
    with open(tables[-1], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(row["step"], row["sample"], row["prompt"]) for row in rows] == [
        ("6", "0", "ROMEO:"),
        ("6", "1", "ROMEO:"),
    ]
    assert [row["continuation"] for row in rows] == [
        sample.split("=====\n", 1)[1].rstrip("\n")[6:] for sample in samples
    ]


def test_wandb_gets_a_table_offline(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no .netrc: nothing to authenticate with
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="genlab-test")
    run(tmp_path, None, TextSamples(prompt="ROMEO:", max_new_tokens=10, num_samples=2, seed=3), logger=logger)
    run_dir = logger.experiment.dir
    logger.experiment.finish()
    tables = sorted((tmp_path / "wandb").rglob("samples/text_*.table.json"))
    assert len(tables) == 2, run_dir  # one table per validation epoch
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["step", "sample", "prompt", "continuation"]
    assert [row[:3] for row in table["data"]] == [[6, 0, "ROMEO:"], [6, 1, "ROMEO:"]]


def test_rejects_a_module_that_cannot_generate(tmp_path):
    class NotALanguageModel(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(torch.ones(1, 1)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(ConfigError, match="text_samples"):
        run(tmp_path, NotALanguageModel(), TextSamples())


def test_prompt_outside_the_vocabulary_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="prompt"):
        run(tmp_path, None, TextSamples(prompt="Zebra™"))
