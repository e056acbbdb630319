"""`genlab export format=onnx`: the VAE decoder and the GPT forward pass run in onnxruntime as in torch, at
batch sizes and lengths other than the ones they were exported with; unsupported cases are one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.export import main
from tests.test_serve import train_tiny

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return train_tiny(tmp_path_factory.mktemp("export"))


def session(path: Path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_vae_decoder_in_onnxruntime_equals_torch(runs, tmp_path, capsys):
    main([f"run={runs['vae']}", f"out={tmp_path / 'vae.onnx'}"])
    assert "max |onnx - torch|" in capsys.readouterr().out
    model = genlab.load(runs["vae"], device="cpu")
    latents = model.draw_latents(5, torch.Generator().manual_seed(3))  # another batch size than exported
    images = session(tmp_path / "vae.onnx").run(None, {"latents": latents.numpy()})[0]
    expected = model.sample(5, generator=torch.Generator().manual_seed(3)).numpy()
    assert images.shape == (5, 1, 28, 28) and np.abs(images - expected).max() < 1e-5


def test_gpt_forward_in_onnxruntime_equals_torch(runs, capsys):
    main([f"run={runs['gpt']}"])
    path = next((runs["gpt"] / "export").glob("*.onnx"))
    model = genlab.load(runs["gpt"], device="cpu")
    ids = torch.stack([model.encode("To be, or not t"), model.encode("Whether 'tis no")])  # (2, 15)
    logits = session(path).run(None, {"ids": ids.numpy()})[0]
    expected = model(ids).detach().numpy()
    assert logits.shape == (2, 15, model.net.vocab_size) and np.abs(logits - expected).max() < 1e-4


def test_a_missing_onnxruntime_names_the_extra(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(SystemExit):
        main([f"run={runs['vae']}"])
    assert "pip install 'genlab[export]'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([f"run={runs['vae']}", "format=tflite"])
    assert "format='tflite': choose one of onnx" in capsys.readouterr().err
