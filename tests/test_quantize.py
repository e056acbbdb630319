"""`genlab quantize`: int8 (GPT) and fp16 (VAE) copies of tiny trained runs load in `genlab.load`, `genlab eval`
and `genlab sample`, stay close to their source, name it in run.json; the pruning schedule and config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import genlab
from genlab.errors import ConfigError
from genlab.quantize import PruningSchedule, main
from tests.conftest import CONF
from tests.test_serve import train_tiny


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return train_tiny(tmp_path_factory.mktemp("quantize"))


def test_dynamic_int8_gpt_is_smaller_close_and_evaluates(runs, capsys):
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    from genlab.evaluate import main as evaluate

    main([f"run={runs['gpt']}", "method=dynamic_int8"])
    out = runs["gpt"].with_name("gpt-dynamic_int8")
    assert f"genlab eval run={out}" in capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert (
        record["source"]["run_dir"] == str(runs["gpt"]) and record["quantization"]["method"] == "dynamic_int8"
    )
    assert (
        record["quantization"]["weights_bytes_after"] < 0.6 * record["quantization"]["weights_bytes_before"]
    )
    checkpoint = torch.load(
        out / record["best_checkpoint"], weights_only=True
    )  # tensors and plain values only
    assert checkpoint["quantization"]["layers"] == 5  # c_attn, c_proj, c_fc, c_proj of one block + lm_head

    source, int8 = genlab.load(runs["gpt"], device="cpu"), genlab.load(out, device="cpu")
    assert sum(isinstance(m, Int8Linear) for m in int8.modules()) == 5
    ids = source.encode("To be, or not")[None]  # within block_size=16
    reference = source(ids)
    assert (int8(ids) - reference).abs().max() < 0.05 * reference.abs().max()
    assert len(int8.generate_text("To be", 20, generator=torch.Generator().manual_seed(0))) == 20

    for run in (runs["gpt"], out):
        evaluate([f"run={run}", "trainer.accelerator=cpu"])
    capsys.readouterr()
    before = json.loads(next((runs["gpt"] / "checkpoints").glob("*.eval.json")).read_text())["metrics"]
    after = json.loads((out / "checkpoints" / "dynamic_int8.eval.json").read_text())["metrics"]
    assert after["test/ppl"] == pytest.approx(before["test/ppl"], rel=0.02)

    from genlab.sample import main as sample

    sample([f"run={out}", "prompt=To be", "max_new_tokens=10", "device=cpu", "stream=false"])
    assert (out / "samples" / "text_seed0" / "samples.txt").read_text().startswith("To be")


def test_fp16_vae_halves_the_weights_and_samples_alike(runs):
    main([f"run={runs['vae']}", "method=fp16", f"out={runs['vae'].with_name('vae-half')}"])
    out = runs["vae"].with_name("vae-half")
    record = json.loads((out / "run.json").read_text())
    ratio = record["quantization"]["weights_bytes_after"] / record["quantization"]["weights_bytes_before"]
    assert 0.45 < ratio < 0.56
    state = torch.load(out / record["best_checkpoint"], weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    g = torch.Generator
    source, half = genlab.load(runs["vae"], device="cpu"), genlab.load(out, device="cpu")
    assert next(half.parameters()).dtype == torch.float32  # computed in float32
    a, b = source.sample(4, generator=g().manual_seed(1)), half.sample(4, generator=g().manual_seed(1))
    assert 0 < (a - b).abs().max() < 1e-2


def test_bad_requests_are_one_line_errors(runs, capsys):
    out = runs["gpt"].with_name("gpt-again")
    main([f"run={runs['gpt']}", f"out={out}"])
    cases = [
        ([f"run={runs['gpt']}", f"out={out}"], "already exists and is not empty: choose another out="),
        ([f"run={out}", f"out={out}-2"], "is quantized already (dynamic_int8): quantize its source"),
        ([f"run={runs['gpt']}", "method=int4"], "method='int4': choose one of dynamic_int8, fp16"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and err.count("\n") == 1 and message in err, err


def test_pruning_schedule_reaches_the_final_amount_and_the_config_builds_model_pruning():
    schedule = PruningSchedule(final_amount=0.75, epochs=2, start_epoch=1)
    assert schedule(0) == 0 and schedule(3) == 0
    left = 1.0
    for epoch in range(5):
        left *= 1 - schedule(epoch)  # ModelPruning prunes that share of the weights still left
    assert left == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="final_amount=1.0 must be in"):
        PruningSchedule(1.0)

    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelPruning
    from omegaconf import OmegaConf

    callback = instantiate(OmegaConf.load(CONF / "callbacks" / "pruning.yaml").pruning)
    assert isinstance(callback, ModelPruning) and callback.amount(0) == pytest.approx(0.5)
    assert callback.amount(1) == 0
