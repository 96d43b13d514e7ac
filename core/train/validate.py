"""A run config checked against the registries: the backbone, strategy and
dataset exist, a folder dataset is there, a transfer strategy has weights to
transfer. It sits above config, backbones, strategies and data so that none
of them imports another to validate; entry points (CLI, pages, the worker)
call `validate` once."""

from __future__ import annotations

from core.errors import ConfigError
from core.train import backbones, data, strategies
from core.train.config import RunConfig, check_ranges


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError with an actionable message, or return cfg unchanged."""
    backbones.get(cfg.backbone)
    strategies.get(cfg.strategy)
    data.get(cfg.dataset)
    check_ranges(cfg)
    if cfg.dataset.startswith(data.FOLDER_PREFIX):
        folder = data.folder_path(cfg.dataset)  # under an allowed root, or a ConfigError that says how to allow it
        if not folder.exists():
            raise ConfigError(f"Folder or ZIP {folder} does not exist. Give a folder with one subfolder per class, or a ZIP of them.")
    spec = backbones.get(cfg.backbone)
    if strategies.get(cfg.strategy).pretrained and not spec.has_pretrained and not cfg.weights:
        raise ConfigError(
            f"{spec.title} has no pretrained weights, so '{cfg.strategy}' has nothing to transfer: "
            f"use the '{strategies.baseline().name}' strategy or pass a weights file."
        )
    return cfg
