"""Options several commands share (the strategy's and the training run's) and
the `RunConfig` they make (through the service layer), validated once here at the edge."""

from __future__ import annotations

import argparse


def labels(value: str) -> int | None:
    """An argparse type: labels per class, a whole number or 'all' (None)."""
    if value.lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"labels per class must be a whole number or 'all' (got {value!r})") from None


def strategy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="efficientnet_lite0", help="backbone name (see `backbones`)")
    p.add_argument("--strategy", default="full", help="strategy name (see `strategies`)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the strategy's)")
    p.add_argument("--freeze-stages", type=int, default=2, help="partial: stem + K body groups frozen (default 2)")
    p.add_argument("--lr-decay", type=float, default=0.5, help="discriminative: LR factor per group, head to stem")
    p.add_argument("--unfreeze-every", type=int, default=1, help="gradual: epochs between unfreezing groups")


def train_options(sp: argparse.ArgumentParser) -> None:
    strategy_options(sp)
    sp.add_argument("--dataset", default="digits", help="dataset name or folder:PATH")
    sp.add_argument("--epochs", type=int, default=3)
    sp.add_argument("--image-size", type=int, default=64)
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--weight-decay", type=float, default=1e-4)
    sp.add_argument("--labels-per-class", type=labels, default=None, help="K training images per class, or 'all'")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    sp.add_argument("--augment", action="store_true", help="random flip, resized crop and colour jitter")
    sp.add_argument("--weights", default=None, help="a weights file (state dict) to start from")
    sp.add_argument("--compile", action="store_true",
                    help="torch.compile the model: a slower start, faster steps after (mostly on a GPU)")
    sp.add_argument("--name", default="", help="a name for the run")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--processes", type=int, default=None,
                    help="train over N processes with DDP, one per GPU (started with torchrun); "
                         "--batch-size is the global batch. Default: 1, or torchrun's process count under torchrun")
    sp.add_argument("--json", action="store_true")


# The options above that are RunConfig fields (lr-find's --steps is not the config's `steps`).
CONFIG_OPTIONS = ("backbone", "strategy", "dataset", "epochs", "image_size", "batch_size", "lr", "weight_decay",
                  "labels_per_class", "seed", "device", "augment", "weights", "freeze_stages", "lr_decay",
                  "unfreeze_every", "name", "processes", "compile")


def run_config(args, check: bool = True, **overrides):
    """The `RunConfig` of parsed strategy/training options (with `overrides`),
    checked here at the edge unless the caller checks what it derives from it."""
    from core.service import forms

    cfg = forms.config_from({**{k: getattr(args, k) for k in CONFIG_OPTIONS if hasattr(args, k)}, **overrides})
    return forms.checked(cfg) if check else cfg
