"""Looking inside a model: Grad-CAM heat-maps, the first convolution's
filters, and per-stage feature maps.

Grad-CAM (Selvaraju et al. 2017): the feature map A (C, h, w) of the
backbone's last spatial stage (`spec.gradcam_layer`), each channel weighted
by the mean gradient of the class score over it, summed, ReLU, upsampled to
the image; Grad-CAM++ (Chattopadhay et al. 2018) weighs the gradients by
their higher powers, which separates several instances of a class better.
Both come from pytorch-grad-cam (`grad-cam` on PyPI). A transformer's
tokens (B, prefix + h*w, C) are reshaped to the patch grid first, the class
and register tokens dropped; Swin's channels-last maps are transposed. The
evidence for a class then sits where the map is hot.

Images come in as the trainer sees them: uint8 (1, C, S, S) at the run's
image size (`predict.load_image`); pictures go out as uint8 RGB arrays
(H, W, 3) ready for `st.image` or PIL. No plotting library is needed.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import TLabError
from core.train import data
from core.train.backbones import BackboneSpec

log = logging.getLogger(__name__)


class NotAvailable(TLabError):
    """This view doesn't apply to this backbone (e.g. Grad-CAM on a model
    without a convolutional feature map)."""


# --- colours ---------------------------------------------------------------------

# Turbo (Google's improved jet), sampled at 9 points: dark blue = cold, red = hot.
_TURBO = np.array([
    [48, 18, 59], [65, 69, 171], [70, 117, 237], [57, 162, 252], [27, 207, 212],
    [36, 236, 166], [97, 252, 108], [164, 252, 59], [209, 232, 52], [243, 198, 58],
    [254, 155, 45], [243, 99, 21], [217, 56, 6], [177, 26, 1], [122, 4, 3],
], dtype=np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3), turbo colours."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_TURBO) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_TURBO) - 1)
    t = (v - lo)[..., None]
    return np.round(_TURBO[lo] * (1 - t) + _TURBO[hi] * t).astype(np.uint8)


def to_rgb(x: torch.Tensor) -> np.ndarray:
    """uint8 image (C, S, S) or (1, C, S, S), C in {1, 3} -> uint8 (S, S, 3)."""
    x = x[0] if x.dim() == 4 else x
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    return x.permute(1, 2, 0).contiguous().numpy().astype(np.uint8)


def upscale(rgb: np.ndarray, size: int) -> np.ndarray:
    """A small RGB picture enlarged to `size` x `size` px (nearest: pixels stay visible)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST))


def overlay(image: torch.Tensor | np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, size: int = 224) -> np.ndarray:
    """The image with the heat-map laid over it, `size` px square: hot areas
    coloured, cold ones nearly see-through."""
    rgb = to_rgb(image) if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.uint8)
    from PIL import Image

    base = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.float32)
    heat = torch.from_numpy(np.asarray(heatmap, dtype=np.float32))[None, None]
    heat = F.interpolate(heat, size=(size, size), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
    colour = colormap(heat).astype(np.float32)
    a = (alpha * (0.25 + 0.75 * heat))[..., None]
    return np.round(base * (1 - a) + colour * a).astype(np.uint8)


# --- Grad-CAM ----------------------------------------------------------------------


CAM_METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}


@dataclass
class GradCam:
    heatmap: np.ndarray  # (S, S) float32 in [0, 1], the input image's size
    class_index: int
    probability: float  # softmax probability of that class
    predicted_index: int
    layer: str
    feature_size: tuple[int, int]  # (h, w) of the feature map the map was computed on
    method: str = "gradcam"


def gradcam_layer(spec: BackboneSpec, model: nn.Module) -> nn.Module:
    """The module Grad-CAM looks at, or NotAvailable with the reason."""
    if not spec.gradcam_layer:
        raise NotAvailable(f"Grad-CAM is not available for {spec.title}: it has no stage whose output is a spatial "
                           "map that gradients could weigh. Pick a run with a convolutional or transformer backbone.")
    try:
        return model.get_submodule(spec.gradcam_layer)
    except AttributeError:
        raise NotAvailable(f"Grad-CAM is not available for {spec.title}: its target layer "
                           f"{spec.gradcam_layer!r} is not in the model.") from None


def _to_map(spec: BackboneSpec, model: nn.Module):
    """pytorch-grad-cam's `reshape_transform`: the layer's output as (B, C, h, w)."""
    def reshape(t: torch.Tensor) -> torch.Tensor:
        if spec.cam_layout == "NHWC" and t.dim() == 4:
            return t.permute(0, 3, 1, 2)
        if spec.cam_layout == "tokens" and t.dim() == 3:
            t = t[:, spec.prefix_tokens:, :]
            grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", ()) or ())
            h, w = grid if len(grid) == 2 and grid[0] * grid[1] == t.shape[1] else (int(t.shape[1] ** 0.5),) * 2
            if h * w != t.shape[1]:
                raise NotAvailable(f"Grad-CAM is not available for {spec.title}: {t.shape[1]} patch tokens "
                                   "make no rectangular grid.")
            return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
        if t.dim() != 4:
            raise NotAvailable(f"Grad-CAM is not available for {spec.title}: its layer {spec.gradcam_layer!r} "
                               f"gives {tuple(t.shape)}, not a convolutional feature map (C, h, w).")
        return t

    return reshape


@contextlib.contextmanager
def _untouched(model: nn.Module):
    """Eval mode, and no parameter gathers a gradient (the graph runs through
    the input instead); the mode and the flags come back afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def gradcam(model: nn.Module, spec: BackboneSpec, x: torch.Tensor, class_index: int | None = None,
            method: str = "gradcam") -> GradCam:
    """A class activation map ("gradcam" or "gradcam++", see CAM_METHODS) for
    one uint8 image (1, C, S, S) at the model's image size, for `class_index`
    (default: the predicted class). The model's weights, gradients and mode
    are left as they were."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in CAM_METHODS:
        raise NotAvailable(f"Unknown heat-map method {method!r}: use one of {', '.join(CAM_METHODS)}.")
    layer = gradcam_layer(spec, model)
    x = x[None] if x.dim() == 3 else x
    classes = model.get_submodule(spec.head).out_features
    if class_index is not None and not 0 <= int(class_index) < classes:
        raise NotAvailable(f"class index {class_index} is out of range: the model has {classes} classes.")
    inputs = data.batch_input(x.cpu(), spec.mean, spec.std).requires_grad_(True)  # a graph even when all is frozen
    cam_class = GradCAMPlusPlus if method == "gradcam++" else GradCAM
    with _untouched(model), torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notices about hooks on modules without gradients
        with cam_class(model=model, target_layers=[layer], reshape_transform=_to_map(spec, model)) as cam:
            targets = None if class_index is None else [ClassifierOutputTarget(int(class_index))]
            heat = cam(input_tensor=inputs, targets=targets)[0]
            logits = cam.outputs.detach().float()
            acts = cam.activations_and_grads.activations  # emptied when the with-block ends
            size = tuple(acts[-1].shape[-2:]) if acts else tuple(x.shape[-2:])
    probs = torch.softmax(logits, dim=1)[0]
    predicted = int(probs.argmax())
    target = predicted if class_index is None else int(class_index)
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32)).clip(0.0, 1.0)
    return GradCam(heat, target, float(probs[target]), predicted, spec.gradcam_layer, size, method)


# --- what the layers learned -----------------------------------------------------------


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """(path, module) of the first convolution that sees the RGB image."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3 and m.groups == 1:
            return name, m
    raise NotAvailable("This model has no convolution on the image (an MLP or a transformer without a conv stem): "
                       "there are no filters to draw.")


MAX_FILTERS = 64


def filter_grid(weight: torch.Tensor, tile: int = 28, cols: int = 8, pad: int = 2,
                max_filters: int = MAX_FILTERS) -> np.ndarray:
    """First-layer filters (K, 3, kh, kw) as one RGB picture, each filter
    stretched to its own full range (positive bright, negative dark) and
    enlarged to `tile` px; the first `max_filters` of them (a ViT's patch
    embedding has hundreds)."""
    w = weight.detach().float().cpu()[:max_filters]
    k = w.shape[0]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp(min=1e-12) * 255).round().to(torch.uint8)
    cols = min(cols, k)
    rows = -(-k // cols)
    out = np.full((rows * (tile + pad) + pad, cols * (tile + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = pad + r * (tile + pad), pad + c * (tile + pad)
        out[y : y + tile, x : x + tile] = upscale(to_rgb(w[i]), tile)
    return out


def first_conv_filters(model: nn.Module) -> tuple[str, np.ndarray]:
    """(layer path, picture) of a model's first convolution's filters."""
    name, conv = first_conv(model)
    return name, filter_grid(conv.weight)


@dataclass
class StageMaps:
    group: str  # layer group name ("stem", "stage1", ...)
    module: str  # the module whose output this is
    channels: int
    size: tuple[int, int]
    maps: np.ndarray  # (k, h, w) float32, the k most active channels for this image
    indices: list[int]  # their channel numbers


def stage_modules(spec: BackboneSpec) -> list[tuple[str, str]]:
    """(group, module path) of every stage but the head, in forward order:
    the last module of each group gives that group's output."""
    return [(g, paths[-1]) for g, paths in spec.groups if g != "head" and paths]


def feature_maps(model: nn.Module, spec: BackboneSpec, x: torch.Tensor, per_stage: int = 8) -> list[StageMaps]:
    """For one uint8 image (1, C, S, S): the output of each stage, stem to
    last, as its `per_stage` most active channels (mean activation). Stages
    whose output is not a spatial map (fully connected ones) are left out."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    stages = stage_modules(spec)
    for _, path in stages:
        handles.append(model.get_submodule(path).register_forward_hook(
            lambda m, i, o, path=path: outputs.__setitem__(path, o.detach() if isinstance(o, torch.Tensor) else None)))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(data.batch_input(x[None] if x.dim() == 3 else x, spec.mean, spec.std))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for group, path in stages:
        o = outputs.get(path)
        if o is None or o.dim() != 4:
            continue
        if spec.cam_layout == "NHWC":  # Swin's stages are channels-last
            o = o.permute(0, 3, 1, 2)
        fmap = o[0].float()
        k = min(per_stage, fmap.shape[0])
        idx = torch.topk(fmap.mean(dim=(1, 2)), k).indices
        out.append(StageMaps(group, path, fmap.shape[0], tuple(fmap.shape[1:]), fmap[idx].numpy(), idx.tolist()))
    if not out:
        raise NotAvailable(f"{spec.title} has no convolutional stages: there are no feature maps to draw.")
    return out


def maps_strip(maps: np.ndarray, tile: int = 64, pad: int = 2) -> np.ndarray:
    """A row of feature maps (k, h, w), each stretched to its own range, as
    one RGB picture (turbo colours)."""
    k = maps.shape[0]
    out = np.full((tile + 2 * pad, k * (tile + pad) + pad, 3), 255, dtype=np.uint8)
    for i, m in enumerate(maps):
        lo, hi = float(m.min()), float(m.max())
        norm = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        out[pad : pad + tile, pad + i * (tile + pad) : pad + i * (tile + pad) + tile] = upscale(colormap(norm), tile)
    return out
