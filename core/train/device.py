"""Where a run trains and what to do when that device runs out of memory:
the device a config names, checked against what this machine has; the
precision and memory layout it trains in there; telling an out-of-memory
error apart and what to say about it; giving the memory back."""

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


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def precision_of(cfg: RunConfig, device: torch.device) -> str:
    """fp32, bf16 or fp16: the config's, or for "auto" the device's default
    (bf16 on a CUDA GPU that has it, fp16 on one that hasn't, fp32 elsewhere)."""
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda":
        return "bf16" if _cuda_bf16() else "fp16"
    return "fp32"


def channels_last_of(cfg: RunConfig, device: torch.device) -> bool:
    """The config's layout, or for None the device's default (channels_last on a CUDA GPU)."""
    return cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"


def check_precision(cfg: RunConfig) -> None:
    """A ConfigError for a precision the run's device can't train in: one
    message that says what to choose instead."""
    try:
        device = resolve_device(cfg.device)
    except ConfigError:
        return  # a device this machine lacks: the run says so where it starts (a queue may serve another machine)
    precision = precision_of(cfg, device)
    if precision == "fp32":
        return
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise ConfigError(f"precision {precision} needs autocast, which PyTorch {torch.__version__} lacks on "
                          f"device '{device.type}': use --precision fp32 (or auto).")
    if device.type == "cuda" and precision == "bf16" and not _cuda_bf16():
        raise ConfigError(f"precision bf16 was asked for, but this GPU ({torch.cuda.get_device_name()}) has no "
                          "bfloat16: use --precision fp16 (with loss scaling) or fp32.")


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
