"""Run configuration: a frozen dataclass of plain data, with its own range
checks. Checking names against the registries (backbones, strategies,
datasets) happens one layer up, in `core.train.validate`, once at the edge
(CLI, page) with messages a person can act on."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from core import paths
from core.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
AUGMENT_LEVELS = ("none", "light", "strong")
AUTO_AUGMENTS = ("off", "trivial", "randaugment")  # not "none": a file or flag "none" means "not set"
MONITORS = ("val_loss", "val_accuracy")
WEIGHTS_USED = ("best", "last")
CLASS_WEIGHTS = ("none", "auto")
SAMPLERS = ("shuffle", "balanced")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 on a CUDA GPU (fp16 where it has none), fp32 elsewhere


@dataclass(frozen=True)
class RunConfig:
    backbone: str = "efficientnet_lite0"
    strategy: str = "full"
    dataset: str = "digits"
    epochs: int = 3
    image_size: int = 64
    batch_size: int = 32
    lr: float | None = None  # None: the strategy's default
    weight_decay: float = 1e-4
    labels_per_class: int | None = None  # None: all training images
    seed: int = 0
    device: str = "auto"
    augment: str = "none"  # none | light | strong (runs stored before this read false/true as none/light)
    weights: str | None = None  # a weights file the user names
    freeze_stages: int = 2  # partial: stem + this many body groups frozen
    lr_decay: float = 0.5  # discriminative: LR factor per group from head to stem
    unfreeze_every: int = 1  # gradual: epochs between unfreezing one more group
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    name: str = ""
    # A fixed number of optimisation steps (batches drawn with replacement),
    # spread over `epochs`: the same budget however many labels there are.
    steps: int | None = None
    # Knowledge distillation from a finished run (its id): alpha * T^2 * KL + (1 - alpha) * CE.
    teacher: str | None = None
    temperature: float = 4.0
    alpha: float = 0.9
    # Processes training this run together, one per GPU (torchrun + DDP; gloo on a CPU).
    # `batch_size` is the GLOBAL batch: each process takes batch_size / processes of it,
    # and `lr` is the learning rate for that global batch. So the data order, the steps
    # per epoch and the LR schedule are the same for any number of processes (no linear
    # LR scaling): only BatchNorm statistics, computed per process, see smaller batches.
    processes: int = 1
    # torch.compile the model for training: slower first steps (compilation),
    # faster ones after, mostly on a GPU.
    compile: bool = False
    # Autocast precision of the forward passes and the memory layout of the model and its
    # input, on any device (README, "Precision and layout"). auto / None: bf16 and
    # channels_last on a CUDA GPU, fp32 and the default layout elsewhere.
    precision: str = "auto"
    channels_last: bool | None = None
    # The training recipe (README, "Training recipe"). Every default keeps a
    # config stored before these fields existed meaning what it meant.
    use_weights: str = "best"  # which epoch's weights score the test split and serve Predict, Inspect, export
    monitor: str = "val_loss"  # what "best" and early stopping watch
    patience: int | None = None  # stop after this many epochs without improvement; None: never early
    min_delta: float = 0.0  # an improvement smaller than this does not count
    label_smoothing: float = 0.0
    class_weights: str = "none"  # auto: inverse-frequency loss weights
    sampler: str = "shuffle"  # balanced: batches drawn with every class equally likely
    # Augmentation knobs; None takes the level's value (core/train/data/augment.py).
    crop_scale: float | None = None  # RandomResizedCrop's smallest area share
    flip: bool | None = None
    auto_augment: str | None = None  # off | trivial | randaugment
    color_jitter: float | None = None
    mixup: float = 0.0  # probability of MixUp per batch
    cutmix: float = 0.0  # probability of CutMix per batch

    def __post_init__(self):
        if isinstance(self.augment, bool):  # stored (or passed) before augmentation had levels
            object.__setattr__(self, "augment", "light" if self.augment else "none")

    @property
    def augmenting(self) -> bool:
        return self.augment != "none"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown setting(s): {', '.join(unknown)}.")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "RunConfig":
        return cls.from_dict(json.loads(s))

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def check_ranges(cfg: RunConfig) -> RunConfig:
    """The config's own checks: every number in its range, every choice one of
    its values. No registry is consulted here (that is `core.train.validate`).
    Raise ConfigError with an actionable message, or return cfg unchanged."""
    _check(isinstance(cfg.epochs, int) and 1 <= cfg.epochs <= 1000, f"epochs must be between 1 and 1000 (got {cfg.epochs}).")
    _check(
        isinstance(cfg.image_size, int) and 16 <= cfg.image_size <= 1024,
        f"image size must be between 16 and 1024 pixels (got {cfg.image_size}); 64 is quick, 224 is what ImageNet backbones saw.",
    )
    _check(isinstance(cfg.batch_size, int) and 1 <= cfg.batch_size <= 4096, f"batch size must be between 1 and 4096 (got {cfg.batch_size}).")
    if cfg.lr is not None:
        _check(
            isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and 0 < cfg.lr <= 10,
            f"learning rate must be a number in (0, 10] (got {cfg.lr}); try 1e-3.",
        )
    _check(math.isfinite(cfg.weight_decay) and 0 <= cfg.weight_decay <= 1, f"weight decay must be in [0, 1] (got {cfg.weight_decay}).")
    if cfg.labels_per_class is not None:
        _check(
            isinstance(cfg.labels_per_class, int) and cfg.labels_per_class >= 1,
            f"labels per class must be at least 1 (got {cfg.labels_per_class}); leave it empty to use all.",
        )
    _check(cfg.device in DEVICES, f"device must be one of {', '.join(DEVICES)} (got {cfg.device!r}).")
    _check(isinstance(cfg.freeze_stages, int) and cfg.freeze_stages >= 0, f"freeze stages must be 0 or more (got {cfg.freeze_stages}).")
    _check(0 < cfg.lr_decay <= 1, f"LR decay must be in (0, 1] (got {cfg.lr_decay}); 0.5 halves the LR per group.")
    _check(isinstance(cfg.unfreeze_every, int) and cfg.unfreeze_every >= 1, f"unfreeze every must be at least 1 epoch (got {cfg.unfreeze_every}).")
    _check(
        0 < cfg.val_fraction < 0.5 and 0 < cfg.test_fraction < 0.5,
        "validation and test fractions must each be between 0 and 0.5.",
    )
    if cfg.steps is not None:
        _check(isinstance(cfg.steps, int) and 1 <= cfg.steps <= 10_000_000, f"steps must be a whole number of at least 1 (got {cfg.steps}).")
    _check(isinstance(cfg.temperature, (int, float)) and math.isfinite(cfg.temperature) and 0 < cfg.temperature <= 100,
           f"distillation temperature must be in (0, 100] (got {cfg.temperature}); 4 is usual.")
    _check(isinstance(cfg.alpha, (int, float)) and 0 <= cfg.alpha <= 1,
           f"distillation alpha must be between 0 and 1 (got {cfg.alpha}); 0.9 weighs the teacher's soft targets most.")
    _check(isinstance(cfg.processes, int) and 1 <= cfg.processes <= 1024,
           f"processes must be a whole number between 1 and 1024 (got {cfg.processes}); 1 trains in one process.")
    _check(cfg.batch_size % cfg.processes == 0,
           f"batch size {cfg.batch_size} is the global batch and must split evenly over {cfg.processes} processes: "
           f"use a multiple of {cfg.processes}, e.g. {max(cfg.processes, cfg.batch_size - cfg.batch_size % cfg.processes)}.")
    _check(isinstance(cfg.compile, bool), f"compile must be true or false (got {cfg.compile!r}).")
    _choice(cfg.precision, PRECISIONS, "precision")
    _check(cfg.channels_last is None or isinstance(cfg.channels_last, bool),
           f"channels last must be true or false, or left out for the device's default (got {cfg.channels_last!r}).")
    if cfg.teacher is not None:
        paths.check_run_id(cfg.teacher)
    check_recipe(cfg)
    return cfg


def _choice(value, choices: tuple, what: str) -> None:
    _check(value in choices, f"{what} must be one of {', '.join(choices)} (got {value!r}).")


def _fraction(value, what: str, hint: str, low: float = 0.0, high: float = 1.0) -> None:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
           and low <= value <= high, f"{what} must be between {low:g} and {high:g} (got {value!r}); {hint}.")


def check_recipe(cfg: RunConfig) -> None:
    """The training recipe's settings: best weights, early stopping, imbalance, augmentation."""
    _choice(cfg.use_weights, WEIGHTS_USED, "use weights")
    _choice(cfg.monitor, MONITORS, "monitor")
    if cfg.patience is not None:
        _check(isinstance(cfg.patience, int) and not isinstance(cfg.patience, bool) and 1 <= cfg.patience <= 1000,
               f"patience must be a whole number of epochs, at least 1 (got {cfg.patience!r}); 3-10 is usual.")
    _fraction(cfg.min_delta, "min delta", "0 counts any improvement, 0.001 ignores noise in the last digits")
    _fraction(cfg.label_smoothing, "label smoothing", "0.1 is usual", high=0.5)
    _choice(cfg.class_weights, CLASS_WEIGHTS, "class weights")
    _choice(cfg.sampler, SAMPLERS, "sampler")
    _choice(cfg.augment, AUGMENT_LEVELS, "augment")
    if cfg.crop_scale is not None:
        _fraction(cfg.crop_scale, "crop scale", "0.08 crops hard, 1 never crops", low=0.05)
    _check(cfg.flip is None or isinstance(cfg.flip, bool), f"flip must be true or false (got {cfg.flip!r}).")
    if cfg.auto_augment is not None:
        _choice(cfg.auto_augment, AUTO_AUGMENTS, "auto augment")
    if cfg.color_jitter is not None:
        _fraction(cfg.color_jitter, "colour jitter", "0.2 is mild, 0.4 strong")
    _fraction(cfg.mixup, "mixup", "it is the probability of mixing a batch; 0 is off, 0.5 is usual")
    _fraction(cfg.cutmix, "cutmix", "it is the probability of cutting and pasting within a batch; 0 is off")
