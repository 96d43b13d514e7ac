"""Learning-rate range test (Smith 2017; fastai's lr_find).

Train for a few hundred steps while the learning rate grows exponentially
from `start_lr` to `end_lr`; record the loss; stop once it blows up. The
suggestion is the LR where the smoothed loss falls fastest (steepest
descent on a log-LR axis), before its minimum. The model and optimizer are
put back exactly as they were (weights, BatchNorm statistics, optimizer
state and LRs, train/eval modes, requires_grad flags).

For discriminative LRs every parameter group keeps its ratio to the head's
LR, so the suggestion is the head's (base) LR, the number the form asks for.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.train import backbones, data, strategies
from core.train.backbones import BackboneSpec
from core.train.config import RunConfig

log = logging.getLogger(__name__)

START_LR, END_LR, STEPS = 1e-7, 10.0, 100
SMOOTHING = 0.9  # exponential moving average of the loss (debiased)
DIVERGE = 4.0  # stop once the smoothed loss exceeds this many times its best


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None  # the base LR to use
    reason: str = ""  # how the suggestion was found, or why there is none
    stopped_early: bool = False  # the loss diverged before end_lr
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LRFinderResult":
        return cls(**d)


@contextlib.contextmanager
def restored(model: nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """Whatever happens inside, the model and optimizer come out bit for bit
    as they went in."""
    state = copy.deepcopy(model.state_dict())
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    try:
        yield
    finally:
        with torch.no_grad():
            model.load_state_dict(state)
        for name, m in model.named_modules():
            m.training = modes[name]
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = None
        if optimizer is not None:
            optimizer.load_state_dict(opt_state)


def suggest(lrs: list[float] | np.ndarray, smoothed: list[float] | np.ndarray) -> tuple[float | None, str]:
    """The LR of steepest descent of the smoothed loss against log10(LR),
    looked for between the first tenth of the curve and the loss minimum."""
    lrs, loss = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    ok = np.isfinite(loss)
    lrs, loss = lrs[ok], loss[ok]
    if len(loss) < 5:
        return None, "too few steps before the loss diverged: lower the start LR or raise the steps"
    lo = max(1, len(loss) // 10)
    hi = int(np.argmin(loss))
    if hi - lo < 2:
        return None, "the loss only rose: the start LR is already too high; lower it"
    slope = np.gradient(loss, np.log10(lrs))
    i = lo + int(np.argmin(slope[lo:hi]))
    if slope[i] >= 0:
        return None, "the loss never fell: check the data and the model"
    return float(lrs[i]), f"steepest descent of the smoothed loss (slope {slope[i]:.3g} per decade)"


def range_test(model: nn.Module, spec: BackboneSpec, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, base_lr: float, batch_size: int = 32, start_lr: float = START_LR,
               end_lr: float = END_LR, steps: int = STEPS, seed: int = 0,
               device: str | torch.device = "cpu") -> LRFinderResult:
    """The LR range test on uint8 images x (N, C, S, S) and labels y, with
    the model in whatever train/eval modes it is in now (set them as for
    training first). Each parameter group's LR is `lr * its LR / base_lr`."""
    if not (0 < start_lr < end_lr) or not all(map(math.isfinite, (start_lr, end_lr))):
        raise ConfigError(f"LR range must satisfy 0 < start < end (got {start_lr:g} to {end_lr:g}).")
    if not 5 <= steps <= 10_000:
        raise ConfigError(f"the LR finder needs between 5 and 10,000 steps (got {steps}); a few hundred is usual.")
    if len(y) < 2:
        raise ConfigError("the LR finder needs at least 2 training images.")
    device = torch.device(device)
    ratios = [pg["lr"] / base_lr if base_lr > 0 else 1.0 for pg in optimizer.param_groups]
    lrs = np.geomspace(start_lr, end_lr, steps)
    g = torch.Generator().manual_seed(seed)
    bs = min(batch_size, len(y))
    losses, smoothed, avg, best = [], [], 0.0, math.inf
    stopped = False
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with restored(model, optimizer):
        for i, lr in enumerate(lrs):
            for pg, r in zip(optimizer.param_groups, ratios):
                pg["lr"] = float(lr) * r
            idx = torch.randint(len(y), (bs,), generator=g)
            xb = data.batch_input(x[idx].to(device), spec.mean, spec.std)
            yb = y[idx].to(device)
            with autocast:
                loss = F.cross_entropy(model(xb).float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(float("nan"))
                stopped = True
                break
            avg = SMOOTHING * avg + (1 - SMOOTHING) * value
            s = avg / (1 - SMOOTHING ** (i + 1))
            smoothed.append(s)
            best = min(best, s)
            if i > 0 and s > DIVERGE * best:
                stopped = True
                break
    n = len(losses)
    suggestion, reason = suggest(lrs[:n], smoothed)
    return LRFinderResult([float(v) for v in lrs[:n]], losses, smoothed, suggestion, reason, stopped)


def find_lr(cfg: RunConfig, steps: int = STEPS, start_lr: float = START_LR, end_lr: float = END_LR) -> LRFinderResult:
    """The range test for a run as configured: the same data (training
    split), model, frozen layers, BatchNorm modes and optimizer as its first
    epoch would have. Nothing is saved. The caller checked `cfg` (pages start
    this through core.service.launching.start_lr_finder, in a background task)."""
    from core.train.engine import resolve_device

    spec = backbones.get(cfg.backbone)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    bundle = data.load(cfg.dataset, cfg.image_size, cfg.seed, cfg.labels_per_class, cfg.val_fraction, cfg.test_fraction)
    model = backbones.create_model(spec, bundle.num_classes, cfg.image_size, strategies.get(cfg.strategy).pretrained, cfg.weights)
    model.to(device)
    plan = strategies.make_plan(spec, model, cfg, 0)
    optimizer = strategies.build_optimizer(spec, model, plan, cfg.weight_decay)
    strategies.set_train_mode(spec, model, plan)
    result = range_test(model, spec, optimizer, bundle.train.x, bundle.train.y, strategies.base_lr(cfg),
                        cfg.batch_size, start_lr, end_lr, steps, cfg.seed, device)
    result.meta = {"backbone": cfg.backbone, "strategy": cfg.strategy, "dataset": cfg.dataset,
                   "image_size": cfg.image_size, "batch_size": cfg.batch_size, "device": str(device),
                   "train_images": len(bundle.train), "current_lr": strategies.base_lr(cfg)}
    return result
