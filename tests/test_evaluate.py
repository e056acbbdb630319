"""`genlab eval`: a tiny run's checkpoint re-evaluated from its own config; bad checkpoints and configs refused."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from genlab.evaluate import main
from tests.conftest import finished_run, run_genlab
from tests.metrics.conftest import save_classifier


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished debug VAE run whose test split was evaluated in full (as `genlab eval` does by default)."""
    return finished_run(
        tmp_path_factory.mktemp("eval") / "run", "debug=fast", "trainer.limit_test_batches=1.0"
    )


def one_error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_eval_of_run_matches_its_own_test_metrics(run_dir: Path, capsys):
    main([f"run={run_dir}", "fidelity.n_samples=20", "full_split=false"])
    printed = capsys.readouterr().out
    record = json.loads((run_dir / "run.json").read_text())
    ckpt = run_dir / record["best_checkpoint"]  # relative to the run dir (an absolute path also joins)
    report = json.loads(ckpt.with_name(f"{ckpt.stem}.eval.json").read_text())
    assert report["checkpoint"] == str(ckpt) and report["split"] == "test"
    metrics = report["metrics"]
    assert "test/loss" in printed and "novelty/copy_fraction/pixels/20" in printed  # the printed table
    # the tests' cache (tests/conftest.py) holds no classifier: FID is skipped with a pointer to the fix
    assert (
        "FID skipped: no classifier at" in printed and "genlab train experiment=mnist_classifier" in printed
    )
    for name in ("test/loss", "test/recon", "test/kl"):
        # the same test batches as the run (full_split=false), and the VAE's test noise has a fixed seed
        assert math.isclose(metrics[name], record["metrics"][name], rel_tol=1e-6), name
    assert 0 <= metrics["novelty/copy_fraction/pixels/20"] <= 1
    assert (
        metrics["novelty/nn_dist_generated/pixels/20"] > 0
        and metrics["novelty/nn_dist_heldout/pixels/20"] > 0
    )
    assert report["novelty_features"] == "pixels"


def test_eval_out_keeps_reports_of_different_overrides_apart(run_dir: Path, tmp_path: Path, capsys):
    """`out=FILE` writes the report there (folders made) and leaves the one beside the checkpoint as it was."""
    beside = run_dir / "checkpoints" / "last.eval.json"
    beside.unlink(missing_ok=True)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    for seed in (1, 2):
        main(
            [
                f"ckpt={ckpt}",
                "fidelity.n_samples=8",
                f"seed={seed}",
                f"out={tmp_path / 'sweep' / f'seed{seed}.json'}",
            ]
        )
    first, second = (json.loads((tmp_path / "sweep" / f"seed{s}.json").read_text()) for s in (1, 2))
    assert (first["seed"], second["seed"]) == (1, 2)
    name = "novelty/nn_dist_generated/pixels/8"
    assert first["metrics"][name] != second["metrics"][name]  # two draws of samples, two reports
    assert not beside.exists()
    assert f"written to {tmp_path / 'sweep' / 'seed2.json'}" in capsys.readouterr().out.replace("\n", "")


def test_eval_multirun_sweeps_run_overrides_and_options_with_one_report_each(
    run_dir: Path, tmp_path: Path, capsys
):
    """`genlab eval -m`: every combination of Hydra-style value lists, a report named by its values, and one
    table; the swept run override really changes the run's config (the VAE's beta weighs the KL term)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    main(
        [
            "-m",
            f"ckpt={ckpt}",
            "fidelity.n_samples=8",
            "seed=1,2",
            "model.beta=1.0,4.0",
            f"out={tmp_path / 'sw'}",
        ]
    )
    reports = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "sw").glob("*.json")}
    assert sorted(reports) == [f"seed={s}_model.beta={b}" for s in (1, 2) for b in ("1.0", "4.0")]
    one, four = reports["seed=1_model.beta=1.0"]["metrics"], reports["seed=1_model.beta=4.0"]["metrics"]
    assert one["test/kl"] == pytest.approx(four["test/kl"])  # same weights, same test noise
    assert four["test/loss"] - one["test/loss"] == pytest.approx(3 * one["test/kl"], rel=1e-4)
    assert reports["seed=2_model.beta=1.0"]["seed"] == 2
    out = capsys.readouterr().out
    assert "4 evaluations" in out and "seed=2_model.beta=4.0" in out
    assert one_error_line(capsys, ["-m", f"ckpt={ckpt}", "seed=1"]) == (
        "error: genlab eval -m needs a key=a,b,... to sweep; without one, drop -m"
    )


def test_eval_with_an_extractor_adds_fidelity_and_classifier_novelty(run_dir: Path, tmp_path: Path, capsys):
    classifier = save_classifier(tmp_path / "classifier.ckpt", trained_on="toy")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    main(
        [f"ckpt={ckpt}", f"fidelity.checkpoint={classifier}", "fidelity.n_samples=20", "fidelity.metrics=[fid,kid]",
         f"fidelity.cache_dir={tmp_path / 'cache'}"]
    )  # fmt: skip
    report = json.loads((run_dir / "checkpoints" / "last.eval.json").read_text())
    assert report["extractor"] == "classifier-toy" and report["novelty_features"] == "classifier-toy"
    assert report["metrics"]["fid/classifier-toy/20"] > 0
    assert "kid/classifier-toy/20" in report["metrics"]
    assert 0 <= report["metrics"]["novelty/copy_fraction/classifier-toy/20"] <= 1
    assert "fidelity" in report["seconds"] and "fid/classifier-toy/20" in capsys.readouterr().out


def test_eval_finds_the_classifier_at_its_home_and_samples_once(run_dir: Path, monkeypatch, capsys):
    """No fidelity.checkpoint: the classifier `genlab train experiment=mnist_classifier` publishes is used."""
    import os

    from genlab.models.vae import VAE

    home = Path(os.environ["GENLAB_CACHE_DIR"]) / "classifiers" / "mnist5k.ckpt"
    home.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(home, trained_on="mnist5k")
    drawn = []
    sample = VAE.sample
    monkeypatch.setattr(
        VAE, "sample", lambda self, n, generator=None: drawn.append(n) or sample(self, n, generator)
    )
    try:
        main(
            [
                f"run={run_dir}",
                "fidelity.n_samples=24",
                "fidelity.metrics=[fid]",
                "full_split=false",
            ]
        )
    finally:
        home.unlink()
    assert sum(drawn) == 24  # one draw serves FID and novelty
    metrics = json.loads(next((run_dir / "checkpoints").glob("epoch*.eval.json")).read_text())["metrics"]
    assert metrics["fid/classifier-mnist5k/24"] > 0
    assert "novelty/copy_fraction/classifier-mnist5k/24" in metrics


def test_corrupt_missing_and_foreign_checkpoints_give_one_line(run_dir: Path, capsys):
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    broken = run_dir / "checkpoints" / "broken.ckpt"
    data = ckpt.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert "broken.ckpt" in one_error_line(capsys, [f"ckpt={broken}"])

    assert "does not exist" in one_error_line(capsys, [f"ckpt={run_dir / 'checkpoints' / 'nope.ckpt'}"])

    other = save_classifier(run_dir / "checkpoints" / "classifier.ckpt")
    line = one_error_line(capsys, [f"ckpt={other}", "fidelity.novelty=false"])
    assert "another family" in line and "classifier.ckpt" in line


def test_foreign_target_is_refused_without_trust_config(run_dir: Path, tmp_path: Path, capsys):
    doctored = tmp_path / "doctored"
    shutil.copytree(run_dir / ".hydra", doctored / ".hydra")
    config = doctored / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("_target_: genlab.models.vae.VAE", "_target_: os.system"))
    ckpt = doctored / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"never read")
    line = one_error_line(capsys, [f"ckpt={ckpt}"])
    assert "model._target_=os.system" in line and "trust_config=true" in line
    # trusted, the config gets past the check: the (fake) checkpoint is what fails next
    assert "cannot read checkpoint" in one_error_line(capsys, [f"ckpt={ckpt}", "trust_config=true"])


def test_val_split_is_evaluated_into_its_own_file(run_dir: Path):
    main(
        [
            f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
            "split=val",
            "fidelity.n_samples=0",
            "fidelity.novelty=false",
        ]
    )
    report = json.loads((run_dir / "checkpoints" / "last.eval-val.json").read_text())
    assert report["split"] == "val" and "val/loss" in report["metrics"]
    assert not any(name.startswith("test/") for name in report["metrics"])


def test_needs_exactly_one_of_ckpt_and_run(capsys):
    assert "exactly one" in one_error_line(capsys, [])


def test_lm_eval_matches_the_run_and_covers_the_full_split(tmp_path: Path, capsys):
    corpus = tmp_path / "corpus.txt"
    words = ["the", "king", "and", "queen", "of", "my", "lord", "sweet", "love", "by", "night", "and", "day"]
    corpus.write_text(
        "\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) for i in range(200))
    )
    run_dir = tmp_path / "lm"
    result = run_genlab(
        "train", "experiment=shakespeare_gpt", "debug=fast", "data=text_files", f"data.path={corpus}",
        "data.splits=[0.8,0.1,0.1]", "data.block_size=16", "data.max_samples=8", "model.net.n_layer=1",
        "model.net.n_embd=32", "model.net.n_head=2", "callbacks.text_samples=null", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    ckpt = run_dir / record["best_checkpoint"]  # relative to the run dir (an absolute path also joins)
    out = ckpt.with_name(f"{ckpt.stem}.eval.json")

    main([f"ckpt={ckpt}", "full_split=false"])  # the run's own 8 test windows: the same numbers
    same = json.loads(out.read_text())["metrics"]
    for name in ("test/loss", "test/ppl", "test/bits_per_token"):
        assert math.isclose(same[name], record["metrics"][name], rel_tol=1e-6), name

    main([f"ckpt={ckpt}"])  # every non-overlapping window of the test split
    full = json.loads(out.read_text())["metrics"]
    assert "novelty/copy_fraction" not in full
    assert full["test/loss"] != same["test/loss"]
    assert math.isclose(full["test/ppl"], math.exp(full["test/loss"]), rel_tol=1e-5)
    assert math.isclose(full["test/bits_per_token"], full["test/loss"] / math.log(2), rel_tol=1e-6)
    assert "test/ppl" in capsys.readouterr().out
