"""CausalLM: training lowers the loss, metrics match an independent computation, KV-cached generation,
sampling controls, and a checkpoint that reloads with weights_only into identical samples."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from genlab.data.text import TextDataModule
from genlab.models.base import LanguageModel
from genlab.models.lm import CausalLM, sample_next_token
from genlab.nets.gpt import GPT
from genlab.optim import cosine

TEXT = "".join(
    f"First Citizen:\nWe are accounted poor citizens, the patricians good. {i % 7}\n\n" for i in range(60)
)


def tiny_lm(vocab_size: int, block_size: int = 16, seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    net = GPT(vocab_size, block_size, n_layer=2, n_head=2, n_embd=32)
    return CausalLM(
        net, optimizer=partial(torch.optim.AdamW, lr=3e-3), scheduler=partial(cosine, min_lr_ratio=0.1)
    )


def tiny_trainer(root, max_steps: int, **kwargs) -> L.Trainer:
    args = {
        "accelerator": "cpu",
        "max_steps": max_steps,
        "max_epochs": -1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(root),
    }
    args.update(kwargs)
    return L.Trainer(**args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run shared by the tests below: (datamodule, module, val loss before, checkpoint dir)."""
    root = tmp_path_factory.mktemp("lm")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    L.seed_everything(0)
    dm = TextDataModule(
        corpus="text_files",
        path=str(root / "corpus.txt"),
        tokenizer="char",
        tokenizer_dir=str(root),
        block_size=16,
        batch_size=8,
        batches_per_epoch=40,
        max_samples=24,
        seed=0,
    )
    dm.setup("fit")
    module = tiny_lm(dm.vocab_size)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=root / "checkpoints", monitor="val/loss", save_last=True
    )
    trainer = tiny_trainer(root, max_steps=80, callbacks=[checkpoint])
    before = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    trainer.fit(module, datamodule=dm)
    return dm, module, before, trainer


def test_loss_goes_down(trained):
    dm, module, before, trainer = trained
    after = trainer.callback_metrics["val/loss"].item()
    assert before > math.log(dm.vocab_size) - 0.5  # starts near uniform
    assert after < before - 1.0


def test_val_metrics_match_independent_computation(trained):
    dm, module, _, trainer = trained
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    nll_sum, count = 0.0, 0
    module.eval()
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            logp = torch.log_softmax(module.net(x).double(), dim=-1)
            nll_sum -= logp.gather(-1, y[..., None]).sum().item()
            count += y.numel()
    mean_nll = nll_sum / count
    assert metrics["val/loss"] == pytest.approx(mean_nll, rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(math.exp(mean_nll), rel=1e-4)
    assert metrics["val/bits_per_token"] == pytest.approx(mean_nll / math.log(2), rel=1e-5)


def test_generate_returns_valid_ids_that_decode(trained):
    dm, module, _, _ = trained
    assert isinstance(module, LanguageModel)
    prompt = dm.encode("First")
    out = module.generate(prompt, 40, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert out.shape == (len(prompt) + 40,) and out.dtype == torch.long
    assert torch.equal(out[: len(prompt)], prompt)
    assert out.min() >= 0 and out.max() < dm.vocab_size
    text = dm.decode(out)
    assert isinstance(text, str) and text.startswith("First") and len(text) == 45
    batch = module.generate(prompt.repeat(3, 1), 5, generator=torch.Generator().manual_seed(1))
    assert batch.shape == (3, len(prompt) + 5)


def test_cached_and_uncached_greedy_generation_identical():
    module = tiny_lm(vocab_size=13, block_size=16).double()
    prompt = torch.randint(13, (2, 5), generator=torch.Generator().manual_seed(3))
    # 40 new tokens with block_size 16: the context window restarts several times
    cached = module.generate(prompt, 40, temperature=0, use_cache=True)
    uncached = module.generate(prompt, 40, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    # and sampling with the same seed follows the same path too
    kw = {"temperature": 1.0, "top_p": 0.9}
    a = module.generate(prompt, 30, generator=torch.Generator().manual_seed(5), use_cache=True, **kw)
    b = module.generate(prompt, 30, generator=torch.Generator().manual_seed(5), use_cache=False, **kw)
    assert torch.equal(a, b)


def test_prompt_longer_than_block_size_is_cropped():
    module = tiny_lm(vocab_size=7, block_size=8)
    out = module.generate(torch.zeros(20, dtype=torch.long), 10, temperature=0)
    assert out.shape == (30,)


def test_sampling_controls():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    gen = torch.Generator().manual_seed(0)
    assert sample_next_token(logits[:1], temperature=0).item() == 1
    assert (sample_next_token(logits, top_k=1, generator=gen) == 1).all()
    top2 = sample_next_token(logits, top_k=2, generator=gen)
    assert set(top2.flatten().tolist()) == {1, 3}
    # probabilities ~ [0.03, 0.64, 0.09, 0.24]: top_p=0.7 keeps tokens 1 and 3 only
    nucleus = sample_next_token(logits, top_p=0.7, generator=gen)
    assert set(nucleus.flatten().tolist()) == {1, 3}
    cold = sample_next_token(logits, temperature=0.05, generator=gen)
    assert (cold == 1).float().mean() > 0.99


def test_checkpoint_round_trip_gives_identical_samples(trained):
    dm, module, _, trainer = trained
    path = trainer.checkpoint_callback.last_model_path
    checkpoint = torch.load(path, weights_only=True)  # tensors and plain Python only
    assert "state_dict" in checkpoint
    fresh = tiny_lm(dm.vocab_size, seed=123)  # different init, overwritten by the checkpoint
    fresh.load_state_dict(checkpoint["state_dict"])
    prompt = dm.encode("We are")
    a = module.generate(prompt, 30, generator=torch.Generator().manual_seed(7))
    b = fresh.generate(prompt, 30, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    # the datamodule's window generator is in the checkpoint too, for exact resumption
    assert any("TextDataModule" in key for key in checkpoint)


def test_nll_is_cross_entropy():
    logits = torch.randn(2, 5, 9)
    targets = torch.randint(9, (2, 5))
    expected = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(CausalLM.nll(logits, targets), expected)
    torch.testing.assert_close(F.cross_entropy(logits.reshape(10, 9), targets.reshape(10)), expected)


@pytest.mark.parametrize(
    ("limit", "every", "checkpoint", "straight_steps", "resumed_steps"),
    [
        (None, 7, "epoch=1-step=7.ckpt", [5, 10], [10]),  # epoch 1, after two of its five batches
        # epochs cut to 3 of 5 batches: the checkpoint ends epoch 1, whose loader had 2 batches left
        (3, 3, "epoch=1-step=6.ckpt", [3, 6, 9, 12], [9, 12]),
    ],
    ids=["mid-epoch", "end-of-a-limited-epoch"],
)
def test_resume_matches_uninterrupted_run(tmp_path, limit, every, checkpoint, straight_steps, resumed_steps):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")

    class ValidationSteps(L.Callback):
        def __init__(self):
            self.steps = []

        def on_validation_end(self, trainer, pl_module):
            self.steps.append(trainer.global_step)

    def fit(root, ckpt_path=None):
        dm = TextDataModule(
            corpus="text_files", path=str(tmp_path / "corpus.txt"), block_size=16, batch_size=4,
            batches_per_epoch=5, max_samples=4, seed=3,
        )  # fmt: skip
        dm.setup("fit")
        module = tiny_lm(dm.vocab_size)
        every_n = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)
        validations = ValidationSteps()
        trainer = tiny_trainer(
            root, max_steps=12, callbacks=[every_n, validations], limit_train_batches=limit
        )
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module, validations.steps

    straight, straight_vals = fit(tmp_path / "a")
    saved = tmp_path / "a" / checkpoint
    assert saved.is_file()
    resumed, resumed_vals = fit(tmp_path / "b", ckpt_path=str(saved))
    # same stream of windows: bitwise equal weights
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # same epoch boundaries (validation after each epoch) in both runs
    assert straight_vals == straight_steps
    assert resumed_vals == resumed_steps
