"""`ConvClassifier`: a small CNN for labelled images whose penultimate layer doubles as a feature extractor.

The features (`features(x)`, dim `feature_dim`) and logits (`head(features)`) are what genlab's `classifier`
feature extractor hands torch-fidelity for FID/KID/precision-recall and the Inception Score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ConvClassifier(nn.Module):
    """Conv blocks (two 3x3 convs + BatchNorm + ReLU, then 2x2 max-pool) -> global average -> features -> logits."""

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32, 64),
        feature_dim: int = 128,
        dropout: float = 0.3,
    ):
        """
        Args:
            image_shape: (C, H, W) of the input images, values in [-1, 1].
            num_classes: number of labels (the logits' size).
            channels: output channels of each conv block; each block halves H and W.
            feature_dim: size of the penultimate layer: the features metrics compare.
            dropout: dropout before the logits (training only), so the features do not overfit 4k images.
        """
        super().__init__()
        # plain values, stored in checkpoints so the net can be rebuilt without its config
        self.config = {
            "image_shape": [int(v) for v in image_shape],
            "num_classes": int(num_classes),
            "channels": [int(c) for c in channels],
            "feature_dim": int(feature_dim),
            "dropout": float(dropout),
        }
        self.image_shape = tuple(self.config["image_shape"])
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        blocks = []
        c_in = self.image_shape[0]
        for c_out in channels:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),  # ceil: 28 -> 14 -> 7 -> 4, odd sizes keep their border
            ]
            c_in = c_out
        self.conv = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] -> penultimate features (B, feature_dim)."""
        h = self.conv(x)  # (B, channels[-1], H', W')
        h = h.mean(dim=(2, 3))  # (B, channels[-1]): global average, so any input size works
        return torch.relu(self.fc(h))  # (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] -> logits (B, num_classes)."""
        return self.head(self.drop(self.features(x)))
