"""`init_from`: a new run that starts from another run's weights, and nothing else of it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import finished_run, run_genlab

TINY = ["debug=fast", "callbacks.sample_grid=null", "test=false", "logger=csv"]
CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40
GPT = [
    "experiment=shakespeare_gpt",
    "data=text_files",
    "data.block_size=16",
    "data.batch_size=4",
    "model.net.n_layer=1",
]
GPT += ["model.net.n_embd=32", "callbacks.text_samples=null"]


def test_init_from_loads_the_weights_only_and_trains_with_the_new_config(tmp_path: Path):
    source = finished_run(tmp_path / "source", *TINY, "trainer.max_steps=4")
    tuned = finished_run(
        tmp_path / "tuned", *TINY, "trainer.max_steps=2", f"init_from={source}", "optimizer.lr=1e-4"
    )
    record = json.loads((tuned / "run.json").read_text())
    best = json.loads((source / "run.json").read_text())["best_checkpoint"]
    assert record["init_from"] == {"checkpoint": str(source / best), "step": 4}

    after = torch.load(tuned / "checkpoints" / "last.ckpt", weights_only=True)
    # a fresh start: its own step count, optimiser state and learning rate, not the source's
    assert after["global_step"] == 2
    (adam,) = after["optimizer_states"]
    assert {int(state["step"]) for state in adam["state"].values()} == {2}
    assert adam["param_groups"][0]["initial_lr"] == 1e-4

    # the weights it started from are the source's, tensor for tensor
    from genlab.checkpoints import init_weights
    from genlab.runs.loading import build_module, load_run_config

    module = build_module(load_run_config(tuned))
    used, step = init_weights(module, source)
    expected = torch.load(source / best, weights_only=True)["state_dict"]
    assert used == source / best and step == 4
    averaged = [key for key in expected if key.endswith("n_averaged")]
    assert all(
        torch.equal(value, expected[key]) for key, value in module.state_dict().items() if key not in averaged
    )
    # ...but a weight average restarts from them (the GAN and diffusion EMAs: their warm-up count is reset)
    assert all(int(module.state_dict()[key]) == 0 for key in averaged)


def test_init_from_a_language_model_reads_the_new_text_with_its_tokenizer(tmp_path: Path):
    (tmp_path / "a.txt").write_text(CORPUS)
    (tmp_path / "b.txt").write_text(" ".join(reversed(CORPUS.split(" "))))  # new text, the same characters
    source = finished_run(
        tmp_path / "source", *TINY, *GPT, f"data.path={tmp_path / 'a.txt'}", "trainer.max_steps=2"
    )
    tuned = run_genlab(
        "train", *TINY, *GPT, f"data.path={tmp_path / 'b.txt'}", "trainer.max_steps=2", f"init_from={source}",
        f"hydra.run.dir={tmp_path / 'tuned'}",
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    tokenizer = (tmp_path / "tuned" / "tokenizer.json").read_text()
    assert tokenizer == (source / "tokenizer.json").read_text()


def test_init_from_restarts_a_weight_average_from_the_loaded_weights(tmp_path: Path):
    from torch.optim.swa_utils import AveragedModel

    from genlab.checkpoints import init_weights

    class WithEMA(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 2)
            self.ema = AveragedModel(self.net)

    source = WithEMA()
    source.ema.n_averaged.fill_(500)
    torch.save({"state_dict": source.state_dict(), "global_step": 500}, tmp_path / "source.ckpt")
    module = WithEMA()
    init_weights(module, tmp_path / "source.ckpt")
    assert torch.equal(module.ema.module.weight, source.ema.module.weight)  # sampled until the first update
    assert int(module.ema.n_averaged) == 0
    module.net.weight.data.add_(1.0)
    module.ema.update_parameters(module.net)  # the first update copies the weights being trained
    assert torch.equal(module.ema.module.weight, module.net.weight)
