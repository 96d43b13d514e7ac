"""Batch transforms, run on the training device: uint8 to normalised float
input, and batched augmentation (flip, random-resized crop, colour jitter)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, S, S) -> float in [0, 1], (B, 3, S, S)."""
    x = x.float().div_(255.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def to_input(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 (B, C, S, S) on any device -> normalised float (B, 3, S, S)."""
    return normalise(to_unit(x), mean, std)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, random-resized crop (scale 0.6-1, aspect 3/4-4/3)
    and colour jitter, per image, batched. x: float in [0, 1], (B, 3, S, S)."""
    b = x.shape[0]
    dev = x.device

    def rand(*shape):  # drawn where the generator lives (the training device, in the engine)
        return torch.rand(*shape, generator=g, device=g.device).to(dev)

    scale = 0.6 + 0.4 * rand(b)
    log_ratio = (rand(b) - 0.5) * 2 * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    sw = torch.sqrt(scale * ratio).clamp(max=1.0)
    sh = torch.sqrt(scale / ratio).clamp(max=1.0)
    tx = (rand(b) * 2 - 1) * (1 - sw)
    ty = (rand(b) * 2 - 1) * (1 - sh)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    bright = (0.8 + 0.4 * rand(b)).view(b, 1, 1, 1)
    contrast = (0.8 + 0.4 * rand(b)).view(b, 1, 1, 1)
    sat = (0.8 + 0.4 * rand(b)).view(b, 1, 1, 1)
    x = x * bright
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * sat + grey
    return x.clamp_(0, 1)


def batch_input(x: torch.Tensor, mean: tuple, std: tuple, g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 batch -> model input; augmented when a generator is given."""
    if g is None:
        return to_input(x, mean, std)
    return normalise(augment(to_unit(x), g), mean, std)
