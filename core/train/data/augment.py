"""Batched augmentation on the training device, by Kornia's `augmentation`
module: every image of a batch draws its own crop, flip and colour change
(Kornia samples parameters per row; torchvision's transforms.v2 draws one set
per call), from a seed, so a run's augmented batches are the same every time.

A level (`none`, `light`, `strong`) names a policy; each knob of the config
(crop scale, flip, auto-augment, colour jitter, MixUp, CutMix) overrides the
level's value. Kornia is imported on first use: a run without augmentation
never loads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

# TrivialAugment and RandAugment pick their operation once per call (the
# magnitude per image): calling them on groups this size gives a batch many
# different operations at little cost.
AUTO_GROUP = 4


@dataclass(frozen=True)
class Policy:
    crop_scale: float  # RandomResizedCrop keeps at least this share of the image's area
    flip: bool  # horizontal flip, one image in two
    auto_augment: str  # off | trivial | randaugment
    color_jitter: float  # brightness, contrast and saturation +- this, hue +- a quarter of it
    mixup: float = 0.0  # probability that a batch is mixed with MixUp
    cutmix: float = 0.0  # probability that a batch gets CutMix

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


LEVELS = {
    "light": Policy(crop_scale=0.6, flip=True, auto_augment="off", color_jitter=0.2),
    "strong": Policy(crop_scale=0.25, flip=True, auto_augment="trivial", color_jitter=0.4),
}
KNOBS = ("crop_scale", "flip", "auto_augment", "color_jitter", "mixup", "cutmix")


def policy_of(cfg) -> Policy | None:
    """The augmentation a config asks for (its level, then its knobs), or None."""
    if cfg.augment == "none":
        return None
    level = LEVELS[cfg.augment]
    knobs = {k: getattr(cfg, k) for k in KNOBS if getattr(cfg, k) is not None}
    knobs = {k: v for k, v in knobs.items() if not (k in ("mixup", "cutmix") and v == 0)}
    return dataclasses.replace(level, **knobs)


def describe(policy: Policy | None) -> str:
    if policy is None:
        return "no augmentation"
    parts = [f"random-resized crop (area {policy.crop_scale:g}-1)"]
    if policy.flip:
        parts.append("horizontal flip")
    if policy.color_jitter:
        parts.append(f"colour jitter {policy.color_jitter:g}")
    if policy.auto_augment != "off":
        parts.append({"trivial": "TrivialAugment", "randaugment": "RandAugment"}[policy.auto_augment])
    if policy.mixup:
        parts.append(f"MixUp (p={policy.mixup:g})")
    if policy.cutmix:
        parts.append(f"CutMix (p={policy.cutmix:g})")
    return ", ".join(parts)


class Augmenter:
    """`aug(x, seed, y)` -> (augmented x, mix): x float in [0, 1], (B, 3, S, S),
    on any device; `mix` is None or (labels a, labels b, weight of b) when
    MixUp or CutMix mixed the batch (the loss then mixes the same way)."""

    def __init__(self, policy: Policy, size: int):
        import kornia.augmentation as K
        from kornia.augmentation import auto

        self.policy = policy
        geometric = [K.RandomResizedCrop((size, size), scale=(policy.crop_scale, 1.0), ratio=(3 / 4, 4 / 3))]
        if policy.flip:
            geometric.append(K.RandomHorizontalFlip(p=0.5))
        if policy.color_jitter:
            j = policy.color_jitter
            geometric.append(K.ColorJitter(j, j, j, min(0.5, j / 4), p=0.8))
        self.per_image = K.AugmentationSequential(*geometric)
        self.auto = {"off": None, "trivial": auto.TrivialAugment, "randaugment": auto.RandAugment}[policy.auto_augment]
        self.auto = self.auto() if self.auto is not None else None
        self.mixup = K.RandomMixUpV2(p=policy.mixup, data_keys=["input", "class"]) if policy.mixup else None
        self.cutmix = (K.RandomCutMixV2(p=policy.cutmix, use_correct_lambda=True, data_keys=["input", "class"])
                       if policy.cutmix else None)

    def __call__(self, x: torch.Tensor, seed: int, y: torch.Tensor | None = None):
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded here, the caller's random stream untouched
            torch.manual_seed(seed)
            x = self.per_image(x)
            if self.auto is not None:
                x = torch.cat([self.auto(part) for part in x.split(AUTO_GROUP)])
            mix = None
            if y is not None and (self.mixup is not None or self.cutmix is not None):
                use_cutmix = self.cutmix is not None and (self.mixup is None or torch.rand(()) < 0.5)
                if use_cutmix:
                    x, lab = self.cutmix(x, y)
                    lab = lab[0]
                    weight_b = 1 - lab[:, 2]  # Kornia's paper-correct lambda is the share of the first image
                else:
                    x, lab = self.mixup(x, y)
                    weight_b = lab[:, 2]
                mix = (lab[:, 0].long(), lab[:, 1].long(), weight_b.to(x.dtype))
        return x.clamp(0, 1), mix


def augment(x: torch.Tensor, policy: Policy, seed: int) -> torch.Tensor:
    """One seeded draw of a policy over a float batch in [0, 1] (no label mixing)."""
    return Augmenter(policy, x.shape[-1])(x, seed)[0]
