"""`genlab compare` on synthetic run directories written here: rows, differing keys, ranking, groups, outputs."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genlab.runs.compare import compare, differing_keys, load_runs, main, metric_mode
from genlab.runs.comparison import TAB10, sample_files
from genlab.runs.rundirs import flatten, resolve
from tests.conftest import CONF, run_genlab

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(
    root: Path,
    name: str,
    *,
    status: str = "completed",
    lr: float = 1e-3,
    seed: int = 1,
    metrics: dict[str, float] | None = None,
    model: dict | None = None,
    curve: list[float] | None = None,
    extra: dict | None = None,
    modes: dict[str, str] | None = None,
    experiment: str = "toy",
) -> Path:
    """A run dir as `genlab train` leaves it: run.json (with `metric_modes` when `modes` is given, as runs
    recorded since the families declare their directions), .hydra/config.yaml, csv/metrics.csv."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {
        "experiment_name": "toy",
        "seed": seed,
        "data": {"batch_size": 8, "seed": "${seed}", "root": "${paths.data_dir}"},
        "model": model or {"_target_": "genlab.models.vae.VAE", "beta": 1.0},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr, "betas": [0.9, 0.999]},
        "callbacks": {"checkpoint": {"dirpath": "${paths.output_dir}/checkpoints", "monitor": "val/loss"}},
        "paths": {"data_dir": "${oc.env:GENLAB_DATA_DIR,data}", "output_dir": str(run)},  # differs per run
        **(extra or {}),
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n")
    record = {
        "status": status,
        "task": "train",
        "experiment": experiment,
        "seed": seed,
        "overrides": [f"optimizer.lr={lr}", f"seed={seed}"],
        "steps": 40,
        "wall_time_s": 12.5,
        "metrics": metrics or {},
        "error": "RuntimeError: boom" if status == "failed" else None,
    }
    if modes is not None:
        record["metric_modes"] = modes
    (run / "run.json").write_text(json.dumps(record))
    if curve:
        (run / "csv").mkdir()
        lines = ["epoch,step,train/loss,val/loss"]
        for i, value in enumerate(curve):
            lines.append(f"0,{i * 10},{value},")
            if i % 2 == 1:  # sparse validation rows, as Lightning's CSVLogger writes them
                lines.append(f"0,{i * 10},,{value + 0.1}")
        (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun folder: two finished runs differing in lr and seed, a failed, an interrupted, a corrupt one."""
    root = tmp_path / "multirun"
    make_run(
        root, "0", lr=1e-3, seed=1, metrics={"val/loss": 0.5, "test/loss": 0.6}, curve=[2.0, 1.0, 0.7, 0.5]
    )
    make_run(
        root, "1", lr=2e-3, seed=2, metrics={"val/loss": 0.4, "test/loss": 0.45}, curve=[2.0, 0.9, 0.5, 0.4]
    )
    make_run(root, "2", status="failed", metrics={"val/loss": 0.1}, curve=[2.0, 1.5])  # better, but failed
    make_run(root, "3", status="interrupted", lr=2e-3, seed=2, metrics={"val/loss": 0.05})
    corrupt = make_run(root, "10", metrics={"val/loss": 0.01})
    (corrupt / "run.json").write_text('{"status": "completed", "metr')  # cut off mid-write
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def compare_output(capsys, *argv: str) -> tuple[str, str]:
    main(list(argv))
    captured = capsys.readouterr()
    return captured.out, captured.err


def parse_markdown(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert re.fullmatch(r"\|(-+:?\|)+", lines[1])
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_rows_differing_keys_and_best_first(sweep: Path, capsys):
    out, err = compare_output(capsys, str(sweep), "--format", "csv", "--no-plots")
    rows = list(csv.DictReader(io.StringIO(out)))
    # best first among completed runs; failed/interrupted/corrupt kept, unranked, in the order found
    assert [r["run"] for r in rows] == ["1", "0", "2", "3", "10"]
    assert [r["#"] for r in rows] == ["1", "2", "", "", ""]
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "interrupted", "corrupt"]
    # exactly the keys that differ: not paths.output_dir, not the interpolated data.seed, not experiment_name
    header = list(rows[0])
    assert header[3:5] == ["seed", "optimizer.lr"]
    assert header == ["#", "run", "experiment", "seed", "optimizer.lr", "status", "steps", "wall_time_s"] + [
        "val/loss",
        "test/loss",
    ]
    assert (rows[0]["seed"], rows[0]["optimizer.lr"]) == ("2", "0.002")
    assert float(rows[0]["val/loss"]) == 0.4 and float(rows[1]["test/loss"]) == 0.6
    assert rows[4]["val/loss"] == ""  # a corrupt record has no metrics
    assert "warning:" in err and str(sweep / "10" / "run.json") in err


def test_failed_runs_never_win_even_with_better_numbers(sweep: Path):
    comparison = compare(load_runs([str(sweep)]))
    ranked = [run.name for run in comparison.runs if comparison.rank(run)]
    assert ranked == ["1", "0"]
    assert comparison.keys == ["seed", "optimizer.lr"]


def test_markdown_table_parses(sweep: Path, capsys):
    out, _ = compare_output(capsys, str(sweep), "--format", "md", "--no-plots")
    rows = parse_markdown(out)
    assert [r["run"] for r in rows] == ["1", "0", "2", "3", "10"]
    assert rows[0]["val/loss"] == "0.4" and rows[0]["wall time"] == "12.5s" and rows[2]["#"] == "—"


def test_rich_table_prints_every_run(sweep: Path, capsys):
    out, _ = compare_output(capsys, str(sweep), "--no-plots")
    assert "ranked by val/loss (min" in out
    for text in ("completed", "failed", "interrupted", "corrupt", "optimizer.lr", "0.002"):
        assert text in out


def test_direction_is_what_the_runs_declare(tmp_path: Path, capsys):
    # a VAE's ELBO is best when largest: its run.json says so, whatever the metric's name
    elbo = {"val/loss": "min", "val/elbo": "max"}
    make_run(tmp_path, "a", metrics={"val/loss": 300.0, "val/elbo": -300.0}, modes=elbo)
    make_run(tmp_path, "b", seed=2, metrics={"val/loss": 100.0, "val/elbo": -100.0}, modes=elbo)
    make_run(
        tmp_path, "old", seed=3, metrics={"val/loss": 200.0, "val/elbo": -200.0}
    )  # predates metric_modes
    runs = load_runs([str(tmp_path)])
    assert metric_mode(runs, "val/elbo") == ("max", "declared", None)
    assert metric_mode(runs, "val/loss") == ("min", "declared", None)
    comparison = compare(runs, metric="val/elbo")
    assert comparison.mode == "max" and [r.name for r in comparison.runs] == ["b", "old", "a"]
    assert comparison.modes == {"val/elbo": "max", "val/loss": "min"}
    # an explicit --mode wins
    assert [r.name for r in compare(runs, metric="val/elbo", mode="min").runs] == ["a", "old", "b"]

    out, _ = compare_output(capsys, str(tmp_path), "--metric", "val/elbo", "--format", "md", "--no-plots")
    assert [r["run"] for r in parse_markdown(out)] == ["b", "old", "a"]
    out, _ = compare_output(capsys, str(tmp_path), "--metric", "val/elbo", "--no-plots")
    assert "ranked by val/elbo (max is best, as the runs declare it" in out
    assert "val/elbo ↑" in out and "val/loss ↓" in out


def test_direction_of_undeclared_old_or_disputed_metrics_is_min(tmp_path: Path, capsys):
    # runs from before the declarations: every metric is loss-like, even one called accuracy
    make_run(tmp_path / "old", "a", metrics={"val/loss": 1.0, "val/acc": 0.9})
    make_run(tmp_path / "old", "b", seed=2, metrics={"val/loss": 0.5, "val/acc": 0.7})
    comparison = compare(load_runs([str(tmp_path / "old")]), metric="val/acc")
    assert (comparison.mode, comparison.mode_source) == ("min", "default")
    assert [r.name for r in comparison.runs] == ["b", "a"]
    assert [r.name for r in compare(load_runs([str(tmp_path / "old")]), "val/acc", mode="max").runs] == [
        "a",
        "b",
    ]

    # a prefix declaration ("is/") covers the metrics under it; a run recording a metric it does not declare
    # counts it "min", one that never recorded it does not vote
    is_max = {"is/": "max"}
    make_run(tmp_path / "new", "x", metrics={"is/cls/64": 2.0, "val/loss": 1.0}, modes=is_max)
    make_run(tmp_path / "new", "y", seed=2, metrics={"is/cls/64": 3.0, "val/loss": 2.0}, modes=is_max)
    make_run(tmp_path / "new", "z", seed=3, metrics={"val/loss": 0.5}, modes={"val/loss": "min"})
    runs = load_runs([str(tmp_path / "new")])
    assert metric_mode(runs, "is/cls/64") == ("max", "declared", None)
    assert metric_mode(runs, "val/loss") == ("min", "declared", None)  # recorded, undeclared by x and y

    # runs that disagree: min, and a warning naming who said what
    make_run(tmp_path / "new", "w", seed=4, metrics={"is/cls/64": 9.0}, modes={"is/cls/64": "min"})
    runs = load_runs([str(tmp_path / "new")])
    mode, source, note = metric_mode(runs, "is/cls/64")
    assert (mode, source) == ("min", "default")
    assert "max: x, y; min: w" in note
    _, err = compare_output(
        capsys, str(tmp_path / "new"), "--metric", "is/cls/64", "--format", "csv", "--no-plots"
    )
    assert "warning: runs disagree on which way is/cls/64 is better (max: x, y; min: w)" in err


def mixed_families(root: Path) -> Path:
    """Two experiments logging different metrics, beside the ones they share; a failed run with few."""
    vae = {"_target_": "genlab.models.vae.VAE", "beta": 1.0}
    gan = {"_target_": "genlab.models.gan.GAN", "latent_dim": 64}
    vae_modes = {"val/loss": "min", "val/elbo": "max", "fid/cls/64": "min"}
    for seed, loss in ((1, 300.0), (2, 200.0)):
        make_run(
            root,
            f"vae{seed}",
            seed=seed,
            model=vae,
            experiment="mnist_vae",
            metrics={"val/loss": loss, "val/elbo": -loss, "val/kl": 10.0, "fid/cls/64": loss / 10},
            modes={**vae_modes, "val/kl": "min"},
            curve=[3.0, 2.0, 1.0, 0.8],
        )
    make_run(
        root,
        "gan1",
        model=gan,
        experiment="mnist_gan",
        metrics={"val/loss": 0.5, "train/d_acc": 0.7, "fid/cls/64": 25.0},
        modes={"val/loss": "min", "train/d_acc": "min", "fid/cls/64": "min"},
        curve=[2.0, 1.5, 1.0, 0.9],
    )
    make_run(root, "gan2", status="failed", model=gan, experiment="mnist_gan", metrics={"val/loss": 0.1})
    return root


def test_mixed_families_show_the_metrics_every_run_shares(tmp_path: Path, capsys):
    root = mixed_families(tmp_path / "runs")
    comparison = compare(load_runs([str(root)]), metric="fid/cls/64")
    # the ranking metric, then what every completed run recorded; the failed run's lack of fid does not count
    assert comparison.metrics == ["fid/cls/64", "val/loss"]
    assert comparison.hidden == ["train/d_acc", "val/elbo", "val/kl"]
    # seed varies within an experiment: a column; the model class is each experiment's own: its recipe
    assert (comparison.keys, comparison.recipe_keys) == (["seed"], ["model._target_"])
    assert [r.name for r in comparison.runs] == ["vae2", "gan1", "vae1", "gan2"]

    out, err = compare_output(capsys, str(root), "--metric", "fid/cls/64", "--format", "md", "--no-plots")
    header = list(parse_markdown(out)[0])
    assert header[:4] == ["#", "run", "experiment", "seed"] and header[-2:] == ["fid/cls/64", "val/loss"]
    note = "note: not shown: 3 metrics not every completed run recorded (train/d_acc, val/elbo, val/kl); "
    note += "1 config keys that differ only between experiments (model._target_); --all-columns shows them"
    assert note in err
    out, _ = compare_output(capsys, str(root), "--format", "md", "--no-plots", "--all-columns")
    header = list(parse_markdown(out)[0])
    assert header[3:5] == ["seed", "model._target_"]
    assert header[-5:] == ["val/loss", "fid/cls/64", "train/d_acc", "val/elbo", "val/kl"]
    # CSV is for programs: every metric, always
    out, err = compare_output(capsys, str(root), "--format", "csv", "--no-plots")
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["vae1"]["val/elbo"] == "-300.0" and rows["gan1"]["train/d_acc"] == "0.7"
    assert rows["gan1"]["val/elbo"] == "" and rows["gan1"]["model._target_"] == "GAN" and "note:" not in err


def png(path: Path, color: tuple[int, int, int], size: int = 8) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


def test_sample_files_are_the_latest_of_each_series_without_copies(tmp_path: Path):
    run_dir = make_run(tmp_path, "a", metrics={"val/loss": 1.0})
    for epoch in (0, 1, 2, 10):
        png(run_dir / "samples" / f"epoch_{epoch:03d}.png", (epoch, 0, 0))
        png(run_dir / "samples" / f"recon_epoch_{epoch:03d}.png", (0, epoch, 0))
    png(run_dir / "samples" / "last.png", (10, 0, 0))  # the callback's copy of the latest grid
    (run_dir / "samples" / "epoch_010.txt").write_text("text")
    (run, *_) = load_runs([str(run_dir)])
    assert [p.name for p in sample_files(run)] == ["epoch_010.png", "recon_epoch_010.png"]
    assert [p.name for p in sample_files(run, (".txt",))] == ["epoch_010.txt"]
    assert sample_files(load_runs([str(make_run(tmp_path, "b"))])[0]) == []


def test_html_report_has_every_runs_samples_and_per_experiment_metrics(tmp_path: Path, capsys):
    root = mixed_families(tmp_path / "runs")
    grids = {name: png(root / name / "samples" / "epoch_002.png", (40 * i, 200, 90)) for i, name in
             enumerate(("vae1", "vae2", "gan1"))}  # fmt: skip
    (root / "gan1" / "samples" / "epoch_002.txt").write_text("ROMEO. <what light>")
    out_dir = tmp_path / "report"
    compare_output(capsys, str(root), "--metric", "fid/cls/64", "--format", "html", "--out", str(out_dir))
    page = (out_dir / "compare.html").read_text()
    embedded = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    samples = {alt: base64.b64decode(data) for alt, data in embedded if ":" in alt}
    assert samples == {f"{name}: epoch_002.png": path.read_bytes() for name, path in grids.items()}
    assert "ROMEO. &lt;what light&gt;" in page  # text samples, escaped
    assert "no samples: gan2" in page
    # every metric stays reachable: one table per experiment with all of its runs' metrics
    sections = dict(re.findall(r"<summary>(\w+): (\d+ runs, \d+ metrics)</summary>", page))
    assert sections == {"mnist_vae": "2 runs, 4 metrics", "mnist_gan": "2 runs, 3 metrics"}


def test_a_run_has_one_colour_in_the_table_and_every_plot(tmp_path: Path, capsys):
    import numpy as np
    from PIL import Image

    root = mixed_families(tmp_path / "runs")
    out_dir = tmp_path / "report"
    compare_output(capsys, str(root), "--metric", "fid/cls/64", "--format", "html", "--out", str(out_dir))
    comparison = compare(load_runs([str(root)]), metric="fid/cls/64")
    colors = {run.name: comparison.color(run) for run in comparison.runs}
    assert colors == dict(zip(["vae2", "gan1", "vae1", "gan2"], TAB10))  # table order, best first

    def has(image: Path, color: str) -> bool:
        pixels = np.asarray(Image.open(image).convert("RGB")).reshape(-1, 3).astype(int)
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
        return bool((np.abs(pixels - rgb).max(axis=1) <= 8).any())

    completed = ["vae2", "gan1", "vae1"]  # the bar chart shows completed runs only
    for image in ("final_fid-cls-64.png", "curves_train-loss.png", "curves_val-loss.png"):
        assert all(has(out_dir / image, colors[name]) for name in completed), image
    assert not has(out_dir / "final_fid-cls-64.png", colors["gan2"])
    page = (out_dir / "compare.html").read_text()
    for name, color in colors.items():
        assert f'<span class="swatch" style="background:{color}"></span>{name}</td>' in page
    # with --by the runs of a group share the group's colour
    grouped = compare(load_runs([str(root)]), metric="fid/cls/64", by="experiment")
    by_name = {run.name: grouped.color(run) for run in grouped.runs}
    assert by_name["vae1"] == by_name["vae2"] != by_name["gan1"] == by_name["gan2"]


def test_plots_are_pngs_and_html_embeds_them(sweep: Path, tmp_path: Path, capsys):
    out_dir = tmp_path / "report"
    out, err = compare_output(capsys, str(sweep), "--format", "html", "--out", str(out_dir))
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert pngs == ["curves_train-loss.png", "curves_val-loss.png", "final_val-loss.png"]
    for name in pngs:
        assert (out_dir / name).read_bytes().startswith(PNG)
    page = (out_dir / "compare.html").read_text()
    assert str(out_dir / "compare.html") in out
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(data).startswith(PNG) for data in images)
    assert "<table>" in page and "interrupted" in page and 'src="http' not in page


def test_default_plot_folder_is_under_the_first_path(sweep: Path, capsys):
    compare_output(capsys, str(sweep))
    assert (sweep / "compare" / "final_val-loss.png").read_bytes().startswith(PNG)
    # a second compare does not mistake its own output folder for runs
    out, _ = compare_output(capsys, str(sweep), "--format", "csv", "--no-plots")
    assert len(list(csv.DictReader(io.StringIO(out)))) == 5


def test_by_groups_mean_min_max_over_completed_runs(tmp_path: Path, capsys):
    vae = {"_target_": "genlab.models.vae.VAE", "beta": 1.0}
    gan = {"_target_": "genlab.models.gan.GAN", "latent_dim": 64}
    for seed, loss in zip((1, 2, 3), (1.0, 2.0, 3.0)):
        make_run(tmp_path, f"vae{seed}", seed=seed, model=vae, metrics={"val/loss": loss})
    for seed, loss in zip((1, 2), (0.5, 1.5)):
        make_run(tmp_path, f"gan{seed}", seed=seed, model=gan, metrics={"val/loss": loss})
    make_run(tmp_path, "gan3", seed=3, model=gan, status="failed", metrics={"val/loss": -9.0})

    comparison = compare(load_runs([str(tmp_path)]), by="model._target_")
    # the class differs, so its arguments (beta, latent_dim) are not separate columns
    assert comparison.keys == ["seed", "model._target_"]
    groups = {g.value: g for g in comparison.groups}
    assert [g.value for g in comparison.groups] == ["GAN", "VAE"]  # best mean first
    assert groups["GAN"].stats["val/loss"] == (2, 1.0, 0.5, 1.5)  # the failed run is not averaged in
    assert groups["VAE"].stats["val/loss"] == (3, 2.0, 1.0, 3.0)
    assert (len(groups["GAN"].runs), groups["GAN"].completed) == (3, 2)

    out, _ = compare_output(
        capsys, str(tmp_path), "--by", "model._target_", "--format", "md", "--out", str(tmp_path / "o")
    )
    tables = out.strip().split("\n\n")
    assert len(tables) == 2
    group_rows = parse_markdown(tables[1])
    assert group_rows[0] == {
        "model._target_": "GAN",
        "runs": "3",
        "completed": "2",
        "val/loss mean": "1",
        "val/loss min": "0.5",
        "val/loss max": "1.5",
    }
    assert (tmp_path / "o" / "final_val-loss.png").read_bytes().startswith(PNG)


def test_by_resolves_interpolations_and_reads_run_json(sweep: Path):
    runs = load_runs([str(sweep)])
    by_data_seed = compare(runs, by="data.seed")  # data.seed is "${seed}" in the file
    assert sorted(g.value for g in by_data_seed.groups) == ["1", "2"]
    assert [g.value for g in compare(runs, by="status").groups][:1] == ["completed"]


def test_resolve_references_but_not_resolvers():
    flat = flatten(
        {
            "seed": 3,
            "data": {"seed": "${seed}", "name": "mnist", "tag": "${.name}-${seed}", "root": "${oc.env:HOME}"},
            "model": {"shape": "${data.shape}"},
        }
    )
    assert resolve(flat, "data.seed") == 3
    assert resolve(flat, "data.tag") == "mnist-3"
    assert resolve(flat, "data.root") == "${oc.env:HOME}"
    assert resolve(flat, "model.shape") == "${data.shape}"


def test_differing_keys_ignore_identical_and_path_keys(tmp_path: Path):
    make_run(tmp_path, "a", metrics={"val/loss": 1.0})
    make_run(tmp_path, "b", metrics={"val/loss": 2.0})
    assert differing_keys(load_runs([str(tmp_path)])) == []


def test_an_empty_node_beside_a_configured_one_is_one_column(tmp_path: Path, capsys):
    # scheduler=none composes `scheduler: {}`; the other run's scheduler._target_ already shows the difference
    make_run(tmp_path, "a", metrics={"val/loss": 1.0}, extra={"scheduler": {}})
    make_run(tmp_path, "b", metrics={"val/loss": 2.0}, extra={"scheduler": {"_target_": "x.Cosine"}})
    assert differing_keys(load_runs([str(tmp_path)])) == ["scheduler._target_"]
    out, _ = compare_output(capsys, str(tmp_path), "--by", "experiment", "--format", "md", "--no-plots")
    header = out.splitlines()[0].split("|")
    assert header.count(" experiment ") == 1  # --by experiment: not a second experiment column


def test_null_is_a_value_and_absent_is_a_dash(tmp_path: Path, capsys):
    make_run(tmp_path, "a", metrics={"val/loss": 1.0}, extra={"trainer": {"limit_train_batches": None}})
    make_run(tmp_path, "b", metrics={"val/loss": 2.0}, extra={"trainer": {"limit_train_batches": 8}})
    make_run(tmp_path, "c", metrics={"val/loss": 3.0})
    out, _ = compare_output(capsys, str(tmp_path), "--format", "md", "--no-plots")
    assert [r["trainer.limit_train_batches"] for r in parse_markdown(out)] == ["null", "8", "—"]


def test_init_from_column_names_the_source_run_shortly(tmp_path: Path, capsys):
    base = make_run(tmp_path, "base", metrics={"val/loss": 1.0}, extra={"init_from": None})
    for name, source, step in (
        ("tuned", base / "checkpoints" / "epoch=1-step=40.ckpt", 40),  # a run being compared: its name
        ("tuned_elsewhere", Path("/old/runs/2026-01-01_10-00-00_gpt/checkpoints/last.ckpt"), 7),
        ("tuned_file", Path("/models/gpt.ckpt"), None),
    ):
        run = make_run(tmp_path, name, metrics={"val/loss": 0.5}, extra={"init_from": str(source)})
        record = json.loads((run / "run.json").read_text())
        record["init_from"] = {"checkpoint": str(source), "step": step}
        (run / "run.json").write_text(json.dumps(record))
    # asked for but never loaded (failed first): the config's value, without a step
    make_run(tmp_path, "failed", status="failed", extra={"init_from": str(base)})

    out, _ = compare_output(capsys, str(tmp_path), "--format", "csv", "--no-plots")
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(out))}
    header = out.splitlines()[0].split(",")
    assert header[:4] == ["#", "run", "experiment", "init_from"] and header.count("init_from") == 1
    assert {name: row["init_from"] for name, row in rows.items()} == {
        "tuned": "base@40",
        "tuned_elsewhere": "2026-01-01_10-00-00_gpt@7",
        "tuned_file": "gpt.ckpt",
        "base": "",
        "failed": "base",
    }
    out, _ = compare_output(capsys, str(tmp_path), "--format", "md", "--no-plots")
    assert {r["run"]: r["init_from"] for r in parse_markdown(out)}["base"] == "—"
    # no fine-tuned run, no column
    out, _ = compare_output(capsys, str(base), "--format", "csv", "--no-plots")
    assert "init_from" not in out.splitlines()[0]


def test_paths_globs_and_short_names(sweep: Path, capsys):
    out, _ = compare_output(capsys, str(sweep / "[01]"), "--format", "csv", "--no-plots")
    assert [r["run"] for r in csv.DictReader(io.StringIO(out))] == ["1", "0"]
    out, _ = compare_output(capsys, str(sweep / "1"), str(sweep / "1"), "--format", "csv", "--no-plots")
    assert [r["run"] for r in csv.DictReader(io.StringIO(out))] == ["1"]


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (lambda p: p.mkdir(), [], "no run directories"),
        (lambda p: None, [], "does not exist"),
        (lambda p: (make_run(p, "a") / "run.json").write_text("{"), [], "no readable run.json"),
        (
            lambda p: make_run(p, "a", metrics={"val/loss": 1.0}),
            ["--metric", "fid"],
            "no run recorded metric 'fid'",
        ),
        (lambda p: make_run(p, "a", metrics={"val/loss": 1.0}), ["--by", "model.name"], "--by model.name"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, capsys, setup, argv, message):
    path = tmp_path / "runs"
    setup(path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--no-plots", *argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_cli_without_torch_lightning_or_matplotlib(sweep: Path, tmp_path: Path):
    code = (
        "import sys; from genlab.cli import main; main(['compare', sys.argv[1], '--no-plots']); "
        "heavy = {'torch', 'lightning', 'matplotlib', 'omegaconf'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(sweep)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "optimizer.lr" in result.stdout

    result = run_genlab("compare", str(tmp_path / "empty"), timeout=60)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_sweep_direction_agrees_with_the_declarations_compare_reads(name: str, tmp_path: Path):
    """An Optuna search optimises its objective the way the family (and callbacks) declare it, which is the
    way `genlab compare` ranks the trials' run dirs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import get_class

    from genlab.directions import declared, metric_modes

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    classes = [get_class(cfg.model._target_)]
    classes += [get_class(node._target_) for node in cfg.callbacks.values() if node and "_target_" in node]
    declarations = declared(classes)
    metric, mode = cfg.objective.metric, cfg.objective.mode
    assert cfg.hydra.sweeper.direction == mode
    # trials as the run record writes them: the better trial must rank first
    better, worse = (1.0, 2.0) if mode == "min" else (2.0, 1.0)
    modes = metric_modes([metric], declarations)
    make_run(tmp_path, "worse", metrics={metric: worse}, modes=modes)
    make_run(tmp_path, "better", seed=2, metrics={metric: better}, modes=modes)
    comparison = compare(load_runs([str(tmp_path)]), metric=metric)
    assert (comparison.mode, comparison.runs[0].name) == (mode, "better")


def test_vae_elbo_is_declared_max_and_logged_as_the_elbo():
    """val/elbo is the evidence lower bound (minus the loss), so larger is better, as the VAE declares."""
    from genlab.models.vae import VAE

    assert VAE.metric_modes.get("val/elbo") == "max" and VAE.metric_modes.get("test/elbo") == "max"


def test_render_and_plots_never_import_compare():
    """Data flows one way: compare builds a Comparison, render and plots only read it."""
    code = (
        "import sys; import genlab.runs.render, genlab.runs.plots, genlab.runs.comparison; "
        "assert 'genlab.runs.compare' not in sys.modules, 'imported compare'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.slow  # a browser start: seconds
@pytest.mark.skipif(
    chromium() is None, reason="no chromium to render the report (Debian: apt-get install chromium)"
)
def test_report_as_a_person_sees_it_in_a_browser(tmp_path: Path, capsys):
    """The html report rendered by headless Chromium: the table's colour swatches, the bar chart in the same
    colours and each run's sample grid are on the screen, within a laptop-wide window."""
    import numpy as np
    from PIL import Image

    root = mixed_families(tmp_path / "runs")
    grid = (255, 0, 255)  # a colour nothing else on the page has
    for name in ("vae1", "vae2", "gan1"):
        png(root / name / "samples" / "epoch_002.png", grid, size=64)
    out_dir = tmp_path / "report"
    compare_output(capsys, str(root), "--metric", "fid/cls/64", "--format", "html", "--out", str(out_dir))
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400",
         f"--screenshot={shot}", (out_dir / "compare.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)

    def rows_with(color: str | tuple[int, int, int]) -> np.ndarray:
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)] if isinstance(color, str) else color)
        return np.nonzero((np.abs(pixels - rgb).max(axis=2) <= 6).sum(axis=1) >= 4)[0]

    comparison = compare(load_runs([str(root)]), metric="fid/cls/64")
    for run in comparison.runs:  # every run's swatch in the table at the top of the page
        assert rows_with(comparison.color(run)).size and rows_with(comparison.color(run))[0] < 400, run.name
    # the three 64-pixel grids side by side, scaled up to 180 pixels (MNIST's 28-pixel digits stay legible)
    magenta = (np.abs(pixels - np.array(grid)).max(axis=2) <= 6).sum()
    assert rows_with(grid).size >= 170 and magenta >= 3 * 170 * 170, "the sample grids are not on the screen"
    # nothing wider than the window: the wide table scrolls in its own box
    assert (pixels[:, -8:] >= 250).all(), "the page is wider than the window"
