"""Reading a weights file as data and assigning it to a model, checked name
by name and shape by shape: what every source of weights (`core.train.weights`
for the curated backbones, `core.train.hub` for timm's catalogue) shares.
Every load goes through `torch.load(..., weights_only=True)`: a weights file is
data, never code."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from core.errors import WeightsUnavailable

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsUnavailable(f"Weights file {path} does not exist.") from None
    except Exception as e:  # unpickling refused, truncated, not a torch file...
        first = _ANSI.sub("", str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in first:
            # torch's text advises weights_only=False: never an option here.
            unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            first = (f"it refers to {unsafe.group(1)}, which is code, not tensor data, and is refused for safety"
                     if unsafe else "it is corrupt or not a PyTorch file")
        raise WeightsUnavailable(
            f"Could not read weights file {path}: {first[:300]}. "
            "It must be a PyTorch state dict saved with torch.save (tensors only)."
        ) from None
    for key in ("state_dict", "model"):  # our checkpoints and common trainers nest it
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailable(
            f"Weights file {path} holds no state dict (a mapping of parameter names to tensors)."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _is_head(spec, key: str) -> bool:
    return key.startswith(spec.head + ".")


def _fit_pos_embed(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ViT checkpoint's position embedding, resampled to the patch grid of
    the model's image size (bicubic, class token kept): a 224 px checkpoint
    then serves a 64 px run."""
    pos, ours = state.get("pos_embed"), getattr(model, "pos_embed", None)
    if pos is None or ours is None or pos.shape == ours.shape:
        return state
    from timm.layers import resample_abs_pos_embed

    prefix = getattr(model, "num_prefix_tokens", 1)
    grid = model.patch_embed.grid_size
    return {**state, "pos_embed": resample_abs_pos_embed(pos, list(grid), num_prefix_tokens=prefix)}


def assign(spec, model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every non-head tensor, checking names and shapes one by one."""
    state = _fit_pos_embed(model, state)
    target = {k: v for k, v in model.state_dict().items() if not _is_head(spec, k)}
    given = {k: v for k, v in state.items() if not _is_head(spec, k)}
    # BatchNorm's batch counter is absent from checkpoints saved before
    # PyTorch 0.4.1, torchvision's ResNet files among them; it is not a weight.
    missing = [k for k in target if k not in given and not k.endswith(".num_batches_tracked")]
    if missing:
        raise WeightsUnavailable(
            f"{source} does not fit {spec.title}: it has no tensor {missing[0]!r} "
            f"({len(given)} tensors given, {len(target)} expected). Is it for another architecture?"
        )
    extra = [k for k in given if k not in target]
    if extra:
        raise WeightsUnavailable(
            f"{source} does not fit {spec.title}: unexpected tensor {extra[0]!r} "
            f"({len(extra)} unexpected). Is it for another architecture?"
        )
    for key, got in given.items():
        want = target[key]
        if tuple(got.shape) != tuple(want.shape):
            raise WeightsUnavailable(
                f"{source} does not fit {spec.title}: {key!r} has shape {tuple(got.shape)}, "
                f"expected {tuple(want.shape)}."
            )
    model.load_state_dict(given, strict=False)
