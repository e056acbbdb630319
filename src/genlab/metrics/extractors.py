"""Feature extractors for torch-fidelity: genlab's trained `classifier`, and the identity of any extractor's weights.

torch-fidelity builds extractors by name from its registry; `register_classifier()` adds `classifier`, whose
weights are a checkpoint of `genlab train experiment=mnist_classifier` (passed as torch-fidelity's
`feature_extractor_weights_path`). Its penultimate features serve FID, KID and precision/recall; its logits
serve the Inception Score.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from genlab.errors import CheckpointError, ConfigError
from genlab.nets.classifier import ConvClassifier

INCEPTION = "inception-v3-compat"
CLASSIFIER = "classifier"
EXTRACTORS = (INCEPTION, CLASSIFIER)


def load_classifier(path: str | Path) -> tuple[ConvClassifier, dict[str, Any]]:
    """The trained net of a classifier checkpoint (eval mode) and the checkpoint's plain metadata."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"classifier checkpoint {path} does not exist: make one with `genlab train experiment=mnist_classifier` "
            f"(saved to <paths.cache_dir>/classifiers/<dataset>.ckpt) or point `checkpoint` at one"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, a pickle of objects, not a checkpoint at all
        raise CheckpointError(
            f"cannot read classifier checkpoint {path} ({type(err).__name__}): {err}"
        ) from err
    if "net_config" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a genlab classifier checkpoint (no net_config/state_dict): use a checkpoint "
            f"written by `genlab train experiment=mnist_classifier`"
        )
    net = ConvClassifier(**checkpoint["net_config"])
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    net.load_state_dict(state)
    net.eval()
    return net, {"trained_on": checkpoint.get("trained_on"), "epoch": checkpoint.get("epoch")}


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity extractor over a genlab classifier: uint8 `[B, 3, H, W]` -> ('features', 'logits').

    torch-fidelity hands every extractor uint8 RGB images (its Inception convention); the classifier sees
    them as it did in training: floats in [-1, 1], grey if it was trained on grey images, at its own size.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ConfigError(
                "the classifier feature extractor needs a checkpoint: set `checkpoint` (weights_path) to a "
                "checkpoint of `genlab train experiment=mnist_classifier`"
            )
        self.net, _ = load_classifier(feature_extractor_weights_path)
        self.requires_grad_(False)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        # the Inception Score reads class probabilities; the distances compare the penultimate features
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        channels, height, width = self.net.image_shape
        h = x.float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1], the datamodules' value range
        if channels == 1:
            h = h.mean(dim=1, keepdim=True)  # grey images arrive as three equal channels
        if h.shape[-2:] != (height, width):
            h = F.interpolate(h, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        features = self.net.features(h)  # (B, feature_dim)
        out = {"features": features, "logits": self.net.head(features)}  # dropout is off: eval mode
        return tuple(out[name] for name in self.features_list)


def register_classifier() -> None:
    """Add `classifier` to torch-fidelity's registry (once per process)."""
    if CLASSIFIER not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(CLASSIFIER, ClassifierFeatureExtractor)


def weights_id(extractor: str, weights_path: str | Path | None) -> str:
    """A short name for an extractor's exact weights: a hash of the file, or the pinned download's name."""
    if extractor not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {extractor!r}: choose one of {', '.join(EXTRACTORS)}")
    if weights_path is None:
        if extractor == CLASSIFIER:
            raise ConfigError(
                "the classifier feature extractor needs `checkpoint`: a classifier checkpoint path"
            )
        # torch-fidelity pins one URL per release, whose file name carries the weights' hash
        return hashlib.sha256(URL_INCEPTION_V3.encode()).hexdigest()[:12]
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"feature extractor weights {path} do not exist: fix the `checkpoint`/`weights_path` value"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
