"""`genlab compare` on synthetic run directories written here: rows, differing keys, ranking, groups, outputs."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genlab.runs.compare import compare, differing_keys, load_runs, main, metric_mode
from genlab.runs.rundirs import flatten, resolve
from tests.conftest import run_genlab

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
) -> Path:
    """A run dir as `genlab train` leaves it: run.json, .hydra/config.yaml, csv/metrics.csv."""
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
        "experiment": "toy",
        "seed": seed,
        "overrides": [f"optimizer.lr={lr}", f"seed={seed}"],
        "steps": 40,
        "wall_time_s": 12.5,
        "metrics": metrics or {},
        "error": "RuntimeError: boom" if status == "failed" else None,
    }
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


def test_max_metrics_rank_descending(tmp_path: Path):
    make_run(tmp_path, "a", metrics={"val/loss": 1.0, "val/acc": 0.9})
    make_run(tmp_path, "b", seed=2, metrics={"val/loss": 0.5, "val/acc": 0.7})
    comparison = compare(load_runs([str(tmp_path)]), metric="val/acc")
    assert comparison.mode == "max" and [r.name for r in comparison.runs] == ["a", "b"]
    assert compare(load_runs([str(tmp_path)]), metric="val/acc", mode="min").runs[0].name == "b"
    assert metric_mode("fid/classifier-mnist5k/5000") == "min" and metric_mode("kid/mean") == "min"
    assert metric_mode("is/inception/5000") == "max" and metric_mode("precision") == "max"
    assert metric_mode("val/dist") == "min"  # "is" as a word, not a substring


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
