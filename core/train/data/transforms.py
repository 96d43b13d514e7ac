"""Batch transforms, run on the training device: uint8 to normalised float input."""

from __future__ import annotations

import torch


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


def batch_input(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 batch -> model input (augmentation, when a run asks for it, is core.train.data.augment's)."""
    return to_input(x, mean, std)
