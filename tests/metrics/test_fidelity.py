"""Image metrics through torch-fidelity: values against direct numpy/scipy computations, names, the reference cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from genlab.errors import CheckpointError, ConfigError
from genlab.metrics.extractors import ClassifierFeatureExtractor, load_classifier
from genlab.metrics.fidelity import Fidelity, to_uint8_rgb
from tests.metrics.conftest import RandomImages, Replay, ToyData, images01, save_classifier


def frechet_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """The Fréchet distance of two Gaussians fitted to feature rows, written out with scipy's sqrtm."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(cov_x @ cov_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * covmean))


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    y = rng.normal(loc=0.5, size=(300, 12)) @ rng.normal(size=(12, 12))
    stats = [fid_features_to_statistics(torch.from_numpy(f)) for f in (x, y)]
    fid = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert fid == pytest.approx(frechet_scipy(x, y), rel=1e-3)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # a random net has dead ReLU features: constant 0
def test_pipeline_fid_matches_direct_computation(classifier_ckpt, tmp_path):
    """Samples -> uint8 -> classifier features -> FID, redone by hand with the same draws and scipy's sqrtm."""
    data = ToyData(images01(48, seed=1))
    fidelity = Fidelity("classifier", classifier_ckpt, n_samples=40, batch_size=16, metrics=["fid"], seed=3)
    fid = fidelity.evaluate(RandomImages(), data)["fid/classifier-toy/40"]

    net, _ = load_classifier(classifier_ckpt)
    generator = torch.Generator().manual_seed(3)
    fake = torch.cat([RandomImages().sample(k, generator) for k in (16, 16, 8)])  # torch-fidelity's batches
    with torch.no_grad():
        feats = [net.features(images * 2 - 1).double().numpy() for images in (fake, data.images[:40])]
    assert fid > 0
    assert fid == pytest.approx(frechet_scipy(*feats), rel=1e-3)


def test_a_set_against_itself_scores_zero(classifier_ckpt):
    real = images01(40, seed=2)
    fidelity = Fidelity("classifier", classifier_ckpt, n_samples=40, batch_size=16, kid_subset_size=20)
    metrics = fidelity.evaluate(Replay(real), ToyData(real))
    assert abs(metrics["fid/classifier-toy/40"]) < 1e-3
    assert abs(metrics["kid/classifier-toy/40"]) < 1e-3
    assert metrics["precision/classifier-toy/40"] == 1.0
    assert metrics["recall/classifier-toy/40"] == 1.0


def test_kid_is_unbiased_for_two_draws_of_one_distribution():
    rng = np.random.default_rng(0)
    kid = {"kid_subsets": 10, "kid_subset_size": 50, "verbose": False}
    same = [
        kid_features_to_metric(torch.randn(100, 8, dtype=torch.float64), torch.randn(100, 8, dtype=torch.float64),
                               rng_seed=int(rng.integers(1 << 30)), **kid)["kernel_inception_distance_mean"]
        for _ in range(40)
    ]  # fmt: skip
    shifted = kid_features_to_metric(torch.randn(100, 8) + 1.0, torch.randn(100, 8), **kid)
    mean, sem = np.mean(same), np.std(same) / np.sqrt(len(same))
    assert abs(mean) < 3 * sem  # centred on 0: a biased (V-statistic) estimate would sit clearly above
    assert shifted["kernel_inception_distance_mean"] > 50 * sem


def test_metric_names_carry_extractor_and_sample_count(classifier_ckpt):
    metrics = Fidelity(
        "classifier", classifier_ckpt, n_samples=30, batch_size=16, kid_subset_size=20
    ).evaluate(RandomImages(), ToyData(images01(30, seed=0)))
    names = ["fid", "kid", "kid_std", "is", "is_std", "precision", "recall"]
    assert sorted(metrics) == sorted(f"{n}/classifier-toy/30" for n in names)
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["is/classifier-toy/30"] >= 1.0


def test_classifier_extractor_reads_images_as_trained(classifier_ckpt):
    """uint8 RGB from torch-fidelity -> the net's grey [-1, 1] input; other sizes are resized."""
    extractor = ClassifierFeatureExtractor("classifier", ["features", "logits"], str(classifier_ckpt))
    images = images01(5, seed=4)
    features, logits = extractor(to_uint8_rgb(images))
    with torch.no_grad():
        expected = extractor.net.features(images * 2 - 1)
    torch.testing.assert_close(features, expected)
    assert logits.shape == (5, 4)
    assert extractor(to_uint8_rgb(torch.rand(3, 1, 16, 16)))[0].shape == (3, 6)


def count_extracted(monkeypatch) -> list[int]:
    """Patch the classifier extractor to record how many images each call embeds."""
    counts: list[int] = []
    forward = ClassifierFeatureExtractor.forward

    def counting(self, x):
        counts.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(ClassifierFeatureExtractor, "forward", counting)
    return counts


def test_reference_features_are_cached_and_reused(classifier_ckpt, tmp_path, monkeypatch):
    counts = count_extracted(monkeypatch)
    data = ToyData(images01(32, seed=0))
    fidelity = Fidelity(
        "classifier", classifier_ckpt, n_samples=20, batch_size=10, cache_dir=tmp_path / "cache"
    )
    first = fidelity.evaluate(RandomImages(), data)
    assert (data.real_calls, sum(counts), fidelity.last_reference_cached) == (1, 40, False)
    counts.clear()
    second = fidelity.evaluate(RandomImages(), data)
    # the real images are neither read nor embedded again; only the 20 samples are
    assert (data.real_calls, sum(counts), fidelity.last_reference_cached) == (1, 20, True)
    assert second == first


@pytest.mark.parametrize("change", ["fingerprint", "extractor weights", "real count"])
def test_reference_cache_recomputes_when_a_key_changes(change, classifier_ckpt, tmp_path, monkeypatch):
    counts = count_extracted(monkeypatch)
    cache = tmp_path / "cache"
    data = ToyData(images01(32, seed=0))
    Fidelity("classifier", classifier_ckpt, n_samples=20, batch_size=10, cache_dir=cache).evaluate(
        RandomImages(), data
    )
    ckpt, n_real = classifier_ckpt, None
    if change == "fingerprint":  # e.g. another resize: same images here, but a different preprocessing key
        data = ToyData(data.images, name="toy-resized")
    elif change == "extractor weights":
        ckpt = save_classifier(tmp_path / "other.ckpt", seed=1)
    else:
        n_real = 16
    counts.clear()
    fidelity = Fidelity("classifier", ckpt, n_samples=20, batch_size=10, n_real=n_real, cache_dir=cache)
    fidelity.evaluate(RandomImages(), data)
    assert fidelity.last_reference_cached is False
    assert sum(counts) == 20 + (n_real or 20)


def test_bad_options_fail_with_one_clear_line(classifier_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        Fidelity("vgg", classifier_ckpt)
    with pytest.raises(ConfigError, match="choose one or more of fid, kid, is, pr"):
        Fidelity("classifier", classifier_ckpt, metrics=["fid", "lpips"])
    with pytest.raises(ConfigError, match="needs `checkpoint`"):
        Fidelity("classifier", None).identity()
    with pytest.raises(ConfigError, match="do not exist"):
        Fidelity("classifier", tmp_path / "missing.ckpt").identity()
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a genlab classifier checkpoint"):
        Fidelity("classifier", tmp_path / "other.ckpt").identity()
