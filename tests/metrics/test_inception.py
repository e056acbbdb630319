"""The Inception path end to end on a handful of images, with a locally saved (random) state dict: no download."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
from torch_fidelity import feature_extractor_inceptionv3 as inception

from genlab.metrics.fidelity import Fidelity
from tests.metrics.conftest import RandomImages, ToyData, images01


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A state dict of torch-fidelity's InceptionV3 architecture, random values: its constructor always loads
    weights, so the loading is patched out once to build the random net whose state dict we save."""
    with (
        mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        torch.manual_seed(0)
        net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "weights.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_end_to_end_with_local_weights(random_inception_weights, tmp_path):
    def no_download(*args, **kwargs):
        raise AssertionError("the Inception weights must come from weights_path, not the network")

    fidelity = Fidelity(
        "inception-v3-compat",
        random_inception_weights,
        n_samples=3,
        batch_size=3,
        prc_neighborhood=2,
        cache_dir=tmp_path,
    )  # ~0.3 s an image on a quiet CPU: 3 samples + 3 real images
    with mock.patch.object(inception, "load_state_dict_from_url", no_download):
        metrics = fidelity.evaluate(RandomImages(), ToyData(images01(3, seed=0)))
    names = ["fid", "kid", "kid_std", "is", "is_std", "precision", "recall"]
    assert sorted(metrics) == sorted(f"{n}/inception-v3-compat/3" for n in names)
    # random weights: the values mean nothing (deep random nets give near-constant features), the pipeline is real
    assert all(math.isfinite(v) for v in metrics.values())
    assert fidelity.last_reference_cached is False
