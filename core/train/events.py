"""What the engine reports while it trains, and the ids of runs.

The engine calls its listeners with these events; the run store is one
listener, a progress bar another. They live apart from the engine so that a
listener (the store above all) needs nothing of the training loop: this
module imports no torch and nothing above it.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from core.train.config import RunConfig
    from core.train.strategies import LayerPlan


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass(frozen=True)
class RunStart:
    run_id: str
    config: RunConfig
    device: str
    class_names: tuple[str, ...]
    sizes: dict  # train / val / test image counts
    plan: LayerPlan
    steps_per_epoch: int
    start_epoch: int  # 1-based epoch this process starts at (>1 when resuming)
    world_size: int = 1  # processes training this run together (torchrun)


@dataclass(frozen=True)
class Step:
    epoch: int  # 1-based
    step: int  # global, 1-based
    loss: float
    lr: float  # the head's learning rate
    images_per_second: float  # all processes together
    rank_images_per_second: tuple[float, ...] = ()  # each process's own, when there are several


@dataclass(frozen=True)
class PlanChange:
    epoch: int
    plan: LayerPlan


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    images_per_second: float


@dataclass(frozen=True)
class LayerStats:
    epoch: int
    rows: tuple[dict, ...]  # group, frozen, lr, params, grad_norm, weight_change


@dataclass(frozen=True)
class Note:
    message: str


@dataclass(frozen=True)
class RunEnd:
    status: str  # finished | cancelled | failed
    reason: str
    result: "RunResult"


Event = RunStart | Step | PlanChange | EpochEnd | LayerStats | Note | RunEnd
Listener = Callable[[Event], None]


@dataclass
class RunResult:
    run_id: str
    status: str
    reason: str = ""
    epochs: int = 0
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    seconds: float = 0.0
    images_per_second: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    device: str = ""
    checkpoint: str = ""
    feature_cache: bool = False
    world_size: int = 1
    # The recipe (core.train.recipe, core.train.calibration): which epoch was
    # best on validation and whose weights scored the test split, why the run
    # stopped, balanced accuracy, and calibration on the test split.
    best_epoch: int | None = None
    scored_epoch: int | None = None
    stop_reason: str = ""
    balanced_accuracy: float | None = None
    temperature: float | None = None
    ece: float | None = None
    ece_calibrated: float | None = None
    reliability: dict | None = None  # per confidence bin, "before" and "after" temperature scaling
    confusion: list | None = None  # the test split's confusion matrix (rows: true class), as scored

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
