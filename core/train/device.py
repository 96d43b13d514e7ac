"""Where a run trains and what to do when that device runs out of memory:
the device a config names, checked against what this machine has; telling
an out-of-memory error apart and what to say about it; giving the memory back."""

from __future__ import annotations

import gc

import torch

from core.errors import ConfigError
from core.train.config import RunConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU here: choose auto or cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for, but this machine has no Apple GPU available: choose auto or cpu.")
    return torch.device(name)


def out_of_memory_reason(cfg: RunConfig, where: str = "") -> str:
    """What to tell a person whose run ran out of (GPU) memory."""
    smaller = max(1, cfg.batch_size // 2)
    return (f"out of memory{' ' + where if where else ''} (batch size {cfg.batch_size}, image size {cfg.image_size} px): "
            f"try a smaller batch size (e.g. {smaller}) or image size, or a smaller backbone, then launch it again.")


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def release_memory() -> None:
    """Give cached GPU memory back after a failed run, so the next one starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
