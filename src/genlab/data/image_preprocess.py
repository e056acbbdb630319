"""Bring uint8 image tensors to the configured (channels, height, width), once, before training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601-2 luma, the weights PIL uses for RGB -> L, so folder and tensor datasets agree
_LUMA = (0.299, 0.587, 0.114)
_CHUNK = 2048  # images resized per call: bounds the float32 copy of big datasets


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 `[N, c, h, w]` with c in {1, 3} -> uint8 `[N, channels, h, w]` (grey repeated, or RGB to luma)."""
    have = images.shape[1]
    if have == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def fit_size(images: Tensor, height: int, width: int) -> Tensor:
    """uint8 `[N, C, h, w]` -> uint8 `[N, C, height, width]`: centre-crop to the target aspect, then resize.

    Cropping first keeps shapes undistorted; bilinear with antialiasing keeps downscaled images smooth.
    """
    h, w = images.shape[-2:]
    if h * width > w * height:  # too tall for the target aspect
        keep = max(1, round(w * height / width))
        top = (h - keep) // 2
        images = images[..., top : top + keep, :]
    elif h * width < w * height:  # too wide
        keep = max(1, round(h * width / height))
        left = (w - keep) // 2
        images = images[..., :, left : left + keep]
    if tuple(images.shape[-2:]) == (height, width):
        return images.contiguous()
    out = torch.empty((images.shape[0], images.shape[1], height, width), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(
            chunk, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def preprocess(images: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
    """uint8 `[N, c, h, w]` -> uint8 `[N, *image_shape]`."""
    channels, height, width = image_shape
    # channels first: converting RGB -> grey before resizing is three times less work
    return fit_size(convert_channels(images, channels), height, width)
