"""The training recipe around the loop (core.train.engine): which epoch was
best and when to stop early, the loss (class weights, label smoothing,
MixUp/CutMix's mixed labels) and a class-balanced draw of the training images.

Small pieces of plain state, each with a `state_dict` where a resume needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Watch:
    """The validation figure a run watches (`monitor`), the best epoch so far,
    and early stopping's patience: `patience` epochs in a row without an
    improvement of more than `min_delta` end the run. A thaw of gradual
    unfreezing starts the count again (the new plan deserves its own epochs)."""

    monitor: str = "val_loss"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    waited: int = 0  # epochs since the last improvement (or thaw)

    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.monitor == "val_loss":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, epoch: int, val_loss: float, val_accuracy: float) -> bool:
        """Record an epoch; True when it is the new best."""
        value = val_loss if self.monitor == "val_loss" else val_accuracy
        if self.better(value):
            self.best, self.best_epoch, self.waited = value, epoch, 0
            return True
        self.waited += 1
        return False

    def thawed(self) -> None:
        self.waited = 0

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.waited >= self.patience

    def stop_reason(self, epoch: int) -> str:
        return f"stopped early at epoch {epoch} (best {self.best_epoch})"

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.waited = state.get("best"), state.get("best_epoch"), int(state.get("waited", 0))


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, N / (K * n_c): 1 for every class when balanced.
    A class absent from the training split gets weight 0 (nothing to weigh)."""
    counts = torch.bincount(y.cpu(), minlength=num_classes).double()
    w = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.float()


def balanced_order(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n training positions drawn with replacement, each class equally likely
    (each image with probability 1 / (K * n_c))."""
    yc = y.cpu()
    counts = torch.bincount(yc).double()
    p = (1.0 / counts)[yc]
    return torch.multinomial(p, n, replacement=True, generator=generator)


class Loss:
    """Cross-entropy with the run's class weights and label smoothing; for a
    batch MixUp or CutMix mixed, the same mix of the two labels' losses."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        self.weight, self.smoothing = weight, label_smoothing

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, mix=None) -> torch.Tensor:
        if mix is None:
            return F.cross_entropy(logits, y, weight=self.weight, label_smoothing=self.smoothing)
        ya, yb, weight_b = mix
        la = F.cross_entropy(logits, ya, weight=self.weight, label_smoothing=self.smoothing, reduction="none")
        lb = F.cross_entropy(logits, yb, weight=self.weight, label_smoothing=self.smoothing, reduction="none")
        return ((1 - weight_b) * la + weight_b * lb).mean()


def summary(cfg, augmentation: str, weight: torch.Tensor | None) -> str:
    """One line for the run's notes: what the recipe adds to plain training."""
    parts = [augmentation,
             f"class weights {', '.join(f'{w:.2f}' for w in weight.tolist())}" if weight is not None else "",
             "class-balanced sampler" if cfg.sampler == "balanced" else "",
             f"label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else "",
             f"early stopping on {cfg.monitor} (patience {cfg.patience})" if cfg.patience else ""]
    return "recipe: " + "; ".join(p for p in parts if p) if any(parts) else ""
