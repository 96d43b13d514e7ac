"""A run config checked against the registries: the backbone, strategy and
dataset exist, a folder dataset is there, a transfer strategy has weights to
transfer. It sits above config, backbones, strategies and data so that none
of them imports another to validate; entry points (CLI, pages, the worker)
call `validate` once."""

from __future__ import annotations

from core.errors import ConfigError
from core.train import backbones, data, strategies
from core.train.device import check_precision
from core.train.config import RunConfig, check_ranges


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError with an actionable message, or return cfg unchanged."""
    backbones.get(cfg.backbone)
    strategies.get(cfg.strategy)
    data.get(cfg.dataset)
    check_ranges(cfg)
    check_precision(cfg)
    if cfg.dataset.startswith(data.FOLDER_PREFIX):
        folder = data.folder_path(cfg.dataset)  # under an allowed root, or a ConfigError that says how to allow it
        if not folder.exists():
            raise ConfigError(f"Folder or ZIP {folder} does not exist. Give a folder with one subfolder per class, or a ZIP of them.")
    spec = backbones.get(cfg.backbone)
    check_image_size(spec, cfg.image_size)
    if strategies.get(cfg.strategy).pretrained and not spec.has_pretrained and not cfg.weights:
        raise ConfigError(
            f"{spec.title} has no pretrained weights, so '{cfg.strategy}' has nothing to transfer: "
            f"use the '{strategies.baseline().name}' strategy or pass a weights file."
        )
    return cfg


def allowed_sizes(spec: backbones.BackboneSpec, size: int) -> list[int]:
    """The sizes the backbone takes nearest to `size`: one, or the two either side."""
    m = spec.size_multiple
    lowest = -(-spec.min_size // m) * m
    return sorted({max(lowest, size // m * m), max(lowest, -(-size // m) * m)})


def check_image_size(spec: backbones.BackboneSpec, size: int) -> None:
    """A ConfigError naming the nearest allowed size when the backbone can't take `size`
    (a ViT's patch multiple, a minimum so that its last feature map is at least 1x1)."""
    if not isinstance(size, int) or (size % spec.size_multiple == 0 and size >= spec.min_size):
        return
    rule = (f"a multiple of {spec.size_multiple} px (its patch size), at least {spec.min_size} px"
            if spec.size_multiple > 1 else f"at least {spec.min_size} px (its feature map shrinks {spec.min_size}x)")
    near = allowed_sizes(spec, size)
    raise ConfigError(f"{spec.title} can't take {size} px images: it needs {rule}. "
                      f"The nearest allowed size is {' or '.join(f'{s} px' for s in near)}.")
