"""Which way each metric is better: declared by families and callbacks, resolved by exact name then prefix."""

from __future__ import annotations

import pytest

from genlab.directions import declared, declared_mode, metric_modes
from genlab.models.base import GenerativeModule
from genlab.models.lm import CausalLM
from genlab.models.vae import VAE


class _Callback:
    metric_modes = {"is/": "max", "precision/": "max", "is/special": "min"}


def test_exact_names_win_over_prefixes_and_undeclared_metrics_are_minimised():
    rules = declared([VAE, _Callback()])
    names = ["val/elbo", "val/loss", "is/classifier-mnist5k/1000", "is/special", "fid/x/10"]
    assert metric_modes(names, rules) == {
        "val/elbo": "max",
        "val/loss": "min",
        "is/classifier-mnist5k/1000": "max",
        "is/special": "min",
        "fid/x/10": "min",
    }
    assert declared_mode("fid/x/10", rules) is None


def test_contradicting_or_malformed_declarations_are_refused():
    class Up:
        metric_modes = {"val/elbo": "min"}

    class Sideways:
        metric_modes = {"val/x": "up"}

    with pytest.raises(ValueError, match="declared both"):
        declared([VAE, Up()])
    with pytest.raises(ValueError, match="use 'min' or 'max'"):
        declared([Sideways()])


def test_families_declare_their_modality_and_nets():
    assert GenerativeModule.modality == "image" and CausalLM.modality == "text"
    assert VAE.net_names == ("net",)
