"""Per-sample transforms of images and clips, driven by an explicit random generator.

Tensors are channel-first floats: images (C, H, W), clips (C, T, H, W). Every random choice comes from
the ``rng`` the caller passes (see :func:`mmtool.data.source.sample_rng`), so a sample's augmentation
depends on (seed, epoch, index) only, never on which worker read it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two dimensions to ``size`` (H, W), antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-2]
    flat = x.reshape(1, -1, *x.shape[-2:]).float()  # (1, C*T, H, W)
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, *size)


def random_crop(x: torch.Tensor, size: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """A ``size`` crop at a random position of the last two dimensions (resized up first if too small)."""
    h, w = x.shape[-2:]
    if h < size[0] or w < size[1]:
        scale = max(size[0] / h, size[1] / w)
        x = resize(x, (max(size[0], round(h * scale)), max(size[1], round(w * scale))))
        h, w = x.shape[-2:]
    top = int(rng.integers(0, h - size[0] + 1))
    left = int(rng.integers(0, w - size[1] + 1))
    return x[..., top : top + size[0], left : left + size[1]]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = max(0, (h - size[0]) // 2), max(0, (w - size[1]) // 2)
    return x[..., top : top + size[0], left : left + size[1]]


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror the last dimension (width)."""
    return x.flip(-1)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` over the first dimension."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB inputs of torchvision's ImageNet/Kinetics weights
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # RGB inputs of CLIP's image towers (openai/CLIP clip/clip.py)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
