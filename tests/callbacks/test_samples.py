"""SampleGrid: PNGs of the right size under default_root_dir/samples, same latents every epoch, loggers fed."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.samples import SampleGrid
from genlab.models.vae import VAE
from genlab.nets.conv_vae import ConvVAE


class NoiseGenerator(L.LightningModule):
    """An ImageGenerator whose samples are its latents: shows exactly which draws the callback made."""

    def __init__(self, shape=(1, 8, 8)):
        super().__init__()
        self.shape = shape
        self.layer = nn.Linear(1, 1)
        self.calls = 0

    def sample(self, n, generator=None):
        self.calls += 1
        return torch.rand(n, *self.shape, generator=generator)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0].flatten(1)[:, :1]).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(shape, n=8):
    return DataLoader(TensorDataset(torch.rand(n, *shape) * 2 - 1, torch.zeros(n)), batch_size=4)


def fit(module, tmp_path, callback, shape, max_epochs=2, **kwargs):
    kwargs = {"logger": False, "num_sanity_val_steps": 0, **kwargs}
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
        **kwargs,
    )
    trainer.fit(module, loader(shape), loader(shape))
    return trainer


def test_vae_grids_are_valid_pngs_of_the_expected_size(tmp_path):
    torch.manual_seed(0)
    vae = VAE(
        ConvVAE((1, 28, 28), 4, (4, 8), hidden_dim=16), optimizer=functools.partial(torch.optim.Adam, lr=1e-3)
    )
    fit(vae, tmp_path, SampleGrid(n=16, seed=0), (1, 28, 28))

    out = tmp_path / "samples"
    names = {p.name for p in out.iterdir()}
    assert names == {f"{kind}epoch_{e:03d}.png" for kind in ("", "recon_") for e in (0, 1)} | {"last.png"}
    # 4x4 tiles of 28 px with torchvision's 2 px padding around each
    for name in ("epoch_001.png", "last.png"):
        with Image.open(out / name) as img:
            img.verify()
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size == (4 * 30 + 2, 4 * 30 + 2)
    # 8 real validation images (two rows of 4) above their 8 reconstructions
    with Image.open(out / "recon_epoch_000.png") as img:
        assert img.size == (4 * 30 + 2, 4 * 30 + 2)
    assert (out / "last.png").read_bytes() == (out / "epoch_001.png").read_bytes()


def test_same_latents_every_epoch_and_every_n_epochs(tmp_path):
    module = NoiseGenerator()
    fit(module, tmp_path, SampleGrid(n=9, every_n_epochs=2, seed=7), (1, 8, 8), max_epochs=4)
    out = tmp_path / "samples"
    assert sorted(p.name for p in out.iterdir()) == ["epoch_001.png", "epoch_003.png", "last.png"]
    assert module.calls == 2
    # the module's samples are the latents: identical files mean identical draws
    assert (out / "epoch_001.png").read_bytes() == (out / "epoch_003.png").read_bytes()
    with Image.open(out / "last.png") as img:
        assert img.size == (3 * 10 + 2, 3 * 10 + 2)  # nrow defaults to ceil(sqrt(9)) = 3
    expected = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    pixels = torch.tensor(list(Image.open(out / "last.png").convert("L").getdata())).view(32, 32)
    tile = pixels[2:10, 2:10].float() / 255  # first tile, inside the padding
    assert torch.allclose(tile, expected[0, 0], atol=1 / 255 + 1e-6)


def test_sanity_check_is_skipped(tmp_path):
    module = NoiseGenerator()
    fit(module, tmp_path, SampleGrid(n=4), (1, 8, 8), max_epochs=1, num_sanity_val_steps=1)
    assert module.calls == 1


def test_modules_without_sample_are_ignored(tmp_path):
    class Plain(NoiseGenerator):
        sample = None  # not an ImageGenerator

    fit(Plain(), tmp_path, SampleGrid(n=4), (1, 8, 8), max_epochs=1)
    assert not (tmp_path / "samples").exists()


def test_tensorboard_receives_the_grid(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    fit(NoiseGenerator(), tmp_path, SampleGrid(n=4), (1, 8, 8), max_epochs=1, logger=logger)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "samples" in events.Tags()["images"]


def test_wandb_gets_log_image():
    calls = []

    class RecordingWandb(WandbLogger):  # never starts a wandb run
        def __init__(self):
            pass

        def log_image(self, key, images, step=None, **kwargs):
            calls.append((key, images[0].shape, step))

    trainer = SimpleNamespace(loggers=[RecordingWandb()], global_step=12)
    SampleGrid._log(trainer, "samples", torch.rand(3, 10, 10))
    assert calls == [("samples", (3, 10, 10), 12)]
