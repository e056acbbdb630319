"""`genlab sample` and `genlab.load` on tiny trained runs of every family: shapes, ranges, seeds, EMA vs raw,
interpolation endpoints, streamed text, relocated run dirs, and one-line errors.

The four runs are trained once for the module, in one `genlab train -m` process (one start-up for all), from
tiny recipes that extend the shipped experiments (written to a `--config-dir`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlab
from genlab.generation.interpolation import data_paths, latent_paths, seed_pairs, slerp
from genlab.sample import main
from tests.conftest import REPO, run_genlab

CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40
TINY = {
    "vae": "defaults: [mnist_vae, _self_]\nmodel:\n  net: {latent_dim: 8, channels: [8, 16], hidden_dim: 32}\n",
    "gan": "defaults: [mnist_gan, _self_]\nmodel:\n  generator: {base_channels: 8}\n  discriminator: {base_channels: 8}\n",
    "ddpm": "defaults: [mnist_ddpm, _self_]\nmodel:\n  net: {base_channels: 8}\n  ema_decay: 0.9\n",
    "gpt": "defaults: [shakespeare_gpt, _self_]\ndata: {corpus: text_files, path: CORPUS, tokenizer: char, "
    "block_size: 16, batch_size: 4}\nmodel:\n  net: {n_layer: 1, n_embd: 32, n_head: 2}\n"
    "callbacks: {text_samples: null}\n",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished tiny run per family: {"vae": run dir, "gan": ..., "ddpm": ..., "gpt": ...}."""
    root = tmp_path_factory.mktemp("sample")
    (root / "corpus.txt").write_text(CORPUS)
    (root / "conf" / "experiment").mkdir(parents=True)
    for family, body in TINY.items():
        text = "# @package _global_\n" + body.replace("CORPUS", str(root / "corpus.txt"))
        (root / "conf" / "experiment" / f"tiny_{family}.yaml").write_text(
            text + f"experiment_name: {family}\n"
        )
    result = run_genlab(
        "train", "-m", "--config-dir", str(root / "conf"), "experiment=" + ",".join(f"tiny_{f}" for f in TINY),
        "debug=fast", "callbacks.sample_grid=null", "test=false", "trainer.limit_val_batches=1",
        f"hydra.sweep.dir={root / 'runs'}", "hydra.sweep.subdir=${experiment_name}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {family: root / "runs" / family for family in TINY}
    for run in runs.values():  # a sweep goes on past a failed job: each must have finished
        record = run / "run.json"
        assert record.is_file() and '"status": "completed"' in record.read_text(), (
            run / "train.log"
        ).read_text()
    return runs


def one_error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("family", ["vae", "gan", "ddpm"])
def test_image_samples_are_seeded_pngs_in_range(runs, family: str, tmp_path: Path, capsys):
    extra = ["steps=3"] if family == "ddpm" else []
    pngs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        main([f"run={runs[family]}", "n=6", f"seed={seed}", "format=both", f"out={tmp_path / name}", *extra])
        files = sorted((tmp_path / name).glob("*.png"))
        assert [f.name for f in files] == ["000000.png", "000001.png", "000002.png", "000003.png",
                                           "000004.png", "000005.png", "grid.png"]  # fmt: skip
        pngs[name] = [f.read_bytes() for f in files]
    assert f"wrote 6 samples to {tmp_path / 'c'}" in capsys.readouterr().out
    assert pngs["a"] == pngs["b"]  # same seed: the same files
    assert all(x != y for x, y in zip(pngs["a"][:6], pngs["c"][:6]))  # another seed: other samples

    from PIL import Image

    assert Image.open(tmp_path / "a" / "000000.png").size == (28, 28)
    model = genlab.load(
        runs[family], device="cpu", overrides=["model.num_inference_steps=3"] * (family == "ddpm")
    )
    images = model.sample(6, generator=seeded(0))
    assert images.shape == (6, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, model.sample(6, generator=seeded(0)))
    # the PNGs are these samples, rounded to 8 bits
    png = torch.tensor(list(Image.open(tmp_path / "a" / "000003.png").convert("L").getdata())).view(28, 28)
    assert (png - (images[3, 0] * 255 + 0.5).clamp(0, 255).floor()).abs().max() <= 1


def test_load_round_trip_equals_a_module_built_by_hand(runs):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    run = runs["gan"]
    model = genlab.load(run, device="cpu")
    assert not model.training and model.use_ema and model.checkpoint_path.parent == run / "checkpoints"
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    by_hand = instantiate(cfg.model, optimizer=None, scheduler=None, _convert_="all")
    state = torch.load(model.checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    by_hand.load_state_dict(state)
    assert torch.equal(model.sample(5, generator=seeded(3)), by_hand.sample(5, generator=seeded(3)))
    # the checkpoint file itself loads the same weights as the run dir
    same = genlab.load(model.checkpoint_path, device="cpu")
    assert torch.equal(same.sample(5, generator=seeded(3)), model.sample(5, generator=seeded(3)))


def test_weights_raw_samples_the_trained_generator_not_the_ema(runs, capsys):
    ema = genlab.load(runs["gan"], device="cpu", weights="ema")
    raw = genlab.load(runs["gan"], device="cpu", weights="raw")
    z = ema.draw_latents(4, seeded(0))
    assert torch.equal(raw.sample(4, generator=seeded(0)), raw.generator.eval()(z).add(1).div(2).clamp(0, 1))
    assert not torch.equal(ema.sample(4, generator=seeded(0)), raw.sample(4, generator=seeded(0)))
    line = one_error_line(capsys, [f"run={runs['vae']}", "weights=ema"])
    assert "weights=ema" in line and "no EMA weights" in line


def test_a_moved_run_dir_loads_its_own_files(runs, tmp_path: Path, capsys):
    import json

    original = runs["vae"]
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(original, copy)
    # a record written elsewhere may name the checkpoint by its old absolute path: the copy's own file is used
    record = json.loads((copy / "run.json").read_text())
    best = (original / record["best_checkpoint"]).absolute()
    (copy / "run.json").write_text(json.dumps({**record, "best_checkpoint": str(best)}))
    assert genlab.load(copy, device="cpu").checkpoint_path == copy / "checkpoints" / best.name

    moved = original.rename(original.with_name("vae-moved"))  # nothing is left at the old place
    try:
        model = genlab.load(moved, device="cpu")
        assert model.checkpoint_path.parent == moved / "checkpoints"
        main([f"run={moved}", "n=4"])
        assert (moved / "samples" / "sample_seed0" / "grid.png").is_file()
        assert str(moved / "samples" / "sample_seed0" / "grid.png") in capsys.readouterr().out
    finally:
        moved.rename(original)


@pytest.mark.parametrize("family", ["vae", "gan", "ddpm"])
def test_interpolation_ends_are_the_samples_of_their_seeds(runs, family: str):
    overrides = (
        ["model.sampler=ddim", "model.eta=0", "model.num_inference_steps=3"] if family == "ddpm" else []
    )
    model = genlab.load(runs[family], device="cpu", overrides=overrides)
    ends = torch.cat([model.sample(1, generator=seeded(s)) for s in (5, 6, 7, 8)])
    # decoded one at a time, as the ends were: VAE and GAN give the very same images, DDIM (eta=0) too
    one_by_one = latent_paths(model, seed_pairs(5, 2), points=4, batch_size=1)
    assert one_by_one.shape == (2, 4, 1, 28, 28) and one_by_one.min() >= 0 and one_by_one.max() <= 1
    assert torch.equal(one_by_one[:, [0, -1]].flatten(0, 1), ends)
    assert not torch.equal(one_by_one[:, 1], one_by_one[:, 0])  # the middle moves
    # in batches cut across rows, only float rounding differs (batched matrix products sum in another order)
    batched = latent_paths(model, seed_pairs(5, 2), points=4, batch_size=3)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)


def test_slerp_keeps_the_norm_of_orthogonal_unit_latents_and_hits_both_ends():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(path[2], torch.tensor([0.5**0.5, 0.5**0.5]))


def test_vae_interpolation_between_real_images_ends_at_their_reconstructions(runs, tmp_path: Path, capsys):
    from genlab.build import build_datamodule

    model = genlab.load(runs["vae"], device="cpu")
    real = build_datamodule(model.run_config).real_images("test")
    rows = data_paths(model, real, rows=3, points=5, seed=0)
    order = torch.randperm(len(real), generator=seeded(0))[:6]
    recon = model.reconstruct(real[order] * 2 - 1).view(3, 2, 1, 28, 28)
    torch.testing.assert_close(rows[:, [0, -1]], recon, atol=1e-6, rtol=0)

    main([f"run={runs['vae']}", "mode=interpolate", "source=data", "rows=3", "points=5", f"out={tmp_path}"])
    assert f"wrote 3 interpolation rows of 5 to {tmp_path / 'grid.png'}" in capsys.readouterr().out
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size == (2 + 5 * 30, 2 + 3 * 30)  # make_grid pads by 2
    line = one_error_line(capsys, [f"run={runs['gan']}", "mode=interpolate", "source=data"])
    assert "source=data" in line and "GAN has no encoder" in line
    line = one_error_line(capsys, [f"run={runs['ddpm']}", "mode=interpolate", "sampler=ddpm"])
    assert "sampler=ddim eta=0" in line


def test_ddpm_takes_another_sampler_without_retraining(runs, tmp_path: Path, capsys):
    main([f"run={runs['ddpm']}", "n=2", "sampler=ddpm", "steps=4", f"out={tmp_path}"])
    out = capsys.readouterr().out
    assert "sampler: ddpm, 4 steps" in out and (tmp_path / "grid.png").is_file()


def test_lm_top_k_1_is_greedy_and_top_k_keeps_to_the_k_likeliest(runs):
    model = genlab.load(runs["gpt"], device="cpu")
    prompt = model.encode("To be")
    greedy = model.generate(prompt, 30, temperature=0)
    assert torch.equal(model.generate(prompt, 30, temperature=1.0, top_k=1, generator=seeded(0)), greedy)
    for seed in range(4):  # prompt + 11 tokens fit the 16-token window: the contexts are plain prefixes
        ids = model.generate(prompt, 11, temperature=2.0, top_k=3, generator=seeded(seed))
        for pos in range(len(prompt), len(ids)):  # each token among the 3 likeliest given what came before
            assert ids[pos] in torch.topk(model.net(ids[None, :pos])[0, -1], 3).indices
    # streaming yields exactly what generate returns
    streamed = torch.stack(list(model.stream(prompt, 30, top_k=5, generator=seeded(2))))
    assert torch.equal(streamed, model.generate(prompt, 30, top_k=5, generator=seeded(2))[len(prompt) :])
    assert isinstance(model.generate_text("To be", 10, generator=seeded(0)), str)


def test_lm_sample_streams_seeded_text_and_writes_it(runs, tmp_path: Path, capsys):
    texts = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        main(
            [
                f"run={runs['gpt']}",
                "prompt=To be",
                "max_new_tokens=40",
                f"seed={seed}",
                f"out={tmp_path / name}",
            ]
        )
        captured = capsys.readouterr()
        texts[name] = (tmp_path / name / "samples.txt").read_text()
        assert captured.out == texts[name]  # what was streamed is what was written
        assert "tokens/s" in captured.err and str(tmp_path / name / "samples.txt") in captured.err
    assert texts["a"] == texts["b"] != texts["c"] and texts["a"].startswith("To be")
    model = genlab.load(runs["gpt"], device="cpu")
    expected = "To be" + model.generate_text("To be", 40, temperature=0.8, generator=seeded(0))
    assert texts["a"] == expected + "\n"


@pytest.mark.parametrize(
    ("family", "args", "expected"),
    [
        ("gpt", ["prompt=To be €"], "outside the char tokenizer's vocabulary"),
        ("vae", ["labels=3"], "VAE is unconditional"),
        ("vae", ["nmae=3"], "unknown option 'nmae'"),
        ("vae", ["sampler=ddim"], "VAE has none"),
        ("gpt", ["mode=interpolate"], "only for image models"),
        ("vae", ["n=0"], "n=0 must be a whole number of at least 1"),
        (None, ["run=/no/such/run"], "/no/such/run does not exist"),
        (None, [], "exactly one of run=RUN_DIR"),
    ],
)
def test_bad_input_is_one_error_line(runs, capsys, family, args, expected):
    line = one_error_line(capsys, ([f"run={runs[family]}"] if family else []) + args)
    assert expected in line, line


def test_cli_writes_the_files_and_help_needs_no_torch(runs, tmp_path: Path, capsys):
    from genlab.cli import main as genlab  # the command's own dispatch, in this process (no start-up)

    genlab(["sample", f"run={runs['vae']}", "n=4", "format=files", f"out={tmp_path}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert f"wrote 4 samples to {tmp_path}" in capsys.readouterr().out
    check = (
        "import sys; from genlab.cli import main; main(['sample', '--help']); import genlab; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    help_run = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    assert help_run.returncode == 0, help_run.stderr
    assert "mode: sample" in help_run.stdout and "weights: auto" in help_run.stdout
