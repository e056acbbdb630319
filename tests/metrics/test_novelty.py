"""Novelty metrics: nearest-neighbour distances vs a brute-force loop; copies vs fresh images."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.metrics.novelty import Novelty, nearest_distances, novelty_metrics
from tests.metrics.conftest import images01


def brute_force_nn(queries: Tensor, reference: Tensor) -> list[float]:
    out = []
    for q in queries.tolist():
        out.append(min(math.sqrt(sum((a - b) ** 2 for a, b in zip(q, r))) for r in reference.tolist()))
    return out


def test_nearest_distances_match_brute_force_in_any_chunking():
    g = torch.Generator().manual_seed(0)
    queries, reference = torch.randn(13, 5, generator=g), torch.randn(29, 5, generator=g)
    expected = torch.tensor(brute_force_nn(queries, reference), dtype=torch.float64)
    for chunk_size in (1, 4, 7, 1024):
        got = nearest_distances(queries, reference, chunk_size=chunk_size)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_metrics_match_brute_force_definitions():
    g = torch.Generator().manual_seed(1)
    train, held = torch.randn(40, 3, generator=g), torch.randn(10, 3, generator=g)
    generated = torch.cat([train[:4] + 1e-3, torch.randn(6, 3, generator=g)])  # 4 near-copies
    metrics = novelty_metrics(generated, held, train, chunk_size=8)
    gen_nn, held_nn = brute_force_nn(generated, train), brute_force_nn(held, train)
    assert math.isclose(metrics["novelty/nn_dist_generated"], sum(gen_nn) / 10, rel_tol=1e-9)
    assert math.isclose(metrics["novelty/nn_dist_heldout"], sum(held_nn) / 10, rel_tol=1e-9)
    expected_copies = sum(d < min(held_nn) for d in gen_nn) / 10
    assert metrics["novelty/copy_fraction"] == expected_copies
    assert expected_copies >= 0.4


class Replay:
    """A 'generator' that replays images it was given (copies of the training set, or fresh real images)."""

    def __init__(self, images: Tensor):
        self.images, self.drawn = images, 0

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        out = self.images[self.drawn : self.drawn + n]
        self.drawn += n
        return out


class Splits:
    def __init__(self, **splits: Tensor):
        self.splits = splits

    def real_images(self, split: str = "test", n: int | None = None) -> Tensor:
        return self.splits[split][:n]


def test_copying_generator_scores_one_and_fresh_images_zero(classifier_ckpt):
    train, test = images01(128, seed=0), images01(16, seed=1)
    data = Splits(train=train, test=test)
    for weights, label in (
        (None, "pixels"),
        (classifier_ckpt, "classifier-toy"),
    ):  # pixels, classifier features
        copies = Novelty(weights, n_samples=16, batch_size=5).evaluate(Replay(train[10:26]), data)
        # names carry the feature space and the count, like the FID names
        assert sorted(copies) == [f"novelty/{s}/{label}/16" for s in ("copy_fraction", "nn_dist_generated",
                                                                       "nn_dist_heldout")]  # fmt: skip
        assert copies[f"novelty/copy_fraction/{label}/16"] == 1.0
        # exact copies: zero up to the float noise of features computed in other batches
        assert (
            copies[f"novelty/nn_dist_generated/{label}/16"]
            < 1e-6
            < copies[f"novelty/nn_dist_heldout/{label}/16"]
        )
    # a fresh image beats all n held-out ones with probability 1/(n+1): here ~1/65
    data = Splits(train=train, test=images01(64, seed=3))
    new = Novelty(None, n_samples=64, batch_size=50).evaluate(Replay(images01(64, seed=4)), data)
    assert new["novelty/copy_fraction/pixels/64"] <= 0.1
    assert new["novelty/nn_dist_generated/pixels/64"] > 0.5 * new["novelty/nn_dist_heldout/pixels/64"]


def test_samples_given_as_uint8_score_as_their_floats():
    """The callback hands over the uint8 samples it drew for FID: the same images as floats on the 1/255 grid."""
    train, test, fake = images01(64, seed=0), images01(12, seed=1), images01(20, seed=2)
    data = Splits(train=train, test=test)
    novelty = Novelty(None, n_samples=100, batch_size=7)
    as_uint8 = novelty.evaluate_samples((fake * 255).round().to(torch.uint8), data)
    assert as_uint8 == novelty.evaluate_samples(fake, data)
    assert "novelty/copy_fraction/pixels/12" in as_uint8  # capped at the held-out split's 12 images
