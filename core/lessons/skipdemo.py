"""Why ResNet's skip connections matter: the degradation problem, run for real.

Plain convolutional stacks and the same stacks with identity skips, built as
in He et al. 2016's CIFAR experiments (6n+2 layers: a 3x3 stem, three stages
of n two-conv blocks at widths w, 2w, 4w, global pooling, a linear head; the
shortcut where the shape changes is the parameter-free "option A": stride-2
subsampling and zero channels). Plain and residual nets of one depth have
exactly the same parameters; the only difference is the `+ x`.

Each net trains for the same number of SGD steps on the digits at a small
image size, from the same seed. Before training, one batch measures the
gradient norm of every layer: in a deep plain stack it drifts by orders of
magnitude from layer to layer (growing towards the input with BatchNorm,
shrinking without it, under PyTorch's default initialisation); with skips it
stays even.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.lessons import SKIP_DEPTHS, SKIP_STEPS
from core.train import data

log = logging.getLogger(__name__)

DEPTHS, STEPS = SKIP_DEPTHS, SKIP_STEPS  # defined torch-free in core.lessons, for the CLI
WIDTH = 8
IMAGE_SIZE = 8
BATCH = 32
LR = 0.05
MOMENTUM = 0.9
TAIL = 10  # final loss: the mean over this many last steps


class _Shortcut(nn.Module):
    """Option A: identity, or stride-2 subsampling with zero-padded channels."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x


def _conv_bn(cin: int, cout: int, stride: int, bn: bool) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn)] + ([nn.BatchNorm2d(cout)] if bn else [])


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, residual: bool, bn: bool):
        super().__init__()
        self.body1 = nn.Sequential(*_conv_bn(cin, cout, stride, bn))
        self.body2 = nn.Sequential(*_conv_bn(cout, cout, 1, bn))
        self.shortcut = _Shortcut(cin, cout, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body2(F.relu(self.body1(x)))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class Stack(nn.Module):
    """A 6n+2-layer CIFAR-style net, plain or residual, with or without BatchNorm."""

    def __init__(self, depth: int, residual: bool, bn: bool = True, width: int = WIDTH, num_classes: int = 10):
        super().__init__()
        check_depth(depth)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(*_conv_bn(3, width, 1, bn), nn.ReLU())
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1, residual, bn))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    def weight_layers(self) -> list[nn.Module]:
        """Convolutions and the head, in forward order: the `depth` weight layers."""
        return [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def check_depth(depth: int) -> None:
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, 44, 56, 110), got {depth}.")


@dataclass
class StackResult:
    depth: int
    residual: bool
    batchnorm: bool
    final_loss: float
    first_layer_grad_norm: float
    grad_norm_spread: float  # largest over smallest per-layer gradient norm at initialisation
    params: int
    seconds: float
    losses: list[float] = field(default_factory=list, repr=False)
    layer_grad_norms: list[float] = field(default_factory=list, repr=False)

    def row(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("losses")
        d.pop("layer_grad_norms")
        return d


def layer_grad_norms(model: Stack, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Gradient norm of each weight layer's weight for one batch, in train mode."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    norms = [float(m.weight.grad.norm()) for m in model.weight_layers()]
    model.zero_grad(set_to_none=True)
    return norms


def train_stack(depth: int, residual: bool, bn: bool, x: torch.Tensor, y: torch.Tensor, steps: int,
                seed: int = 0, lr: float = LR) -> StackResult:
    """Build one stack from `seed`, measure its gradients at init, train it
    `steps` SGD steps on (x, y) (normalised float images) and report."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = Stack(depth, residual, bn, num_classes=int(y.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    order = torch.randint(len(y), (steps + 1, BATCH), generator=g)
    norms = layer_grad_norms(model, x[order[0]], y[order[0]])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=1e-4)
    losses = []
    model.train()
    for i in range(1, steps + 1):
        idx = order[i]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # a diverging net stays finite, and shows it
        opt.step()
        value = float(loss.detach())
        losses.append(value if math.isfinite(value) else float("nan"))
    conv_norms = [n for n in norms[:-1] if n > 0]
    spread = max(conv_norms) / min(conv_norms) if conv_norms else float("nan")
    tail = [v for v in losses[-TAIL:] if v == v]
    return StackResult(depth, residual, bn, sum(tail) / len(tail) if tail else float("nan"), norms[0], spread,
                       sum(p.numel() for p in model.parameters()), time.perf_counter() - t0, losses, norms)


def run(depths: tuple[int, ...] = DEPTHS, steps: int = STEPS, bn: bool = True, seed: int = 0,
        image_size: int = IMAGE_SIZE, on_result: Callable[[StackResult], None] | None = None) -> list[StackResult]:
    """Plain and residual stacks at each depth, trained on the digits' training split."""
    for d in depths:
        check_depth(d)
    if not isinstance(steps, int) or not 1 <= steps <= 100_000:
        raise ConfigError(f"steps must be a whole number between 1 and 100000 (got {steps}).")
    bundle = data.load("digits", image_size, seed)
    x = data.to_input(bundle.train.x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    y = bundle.train.y
    out = []
    for depth in depths:
        for residual in (False, True):
            result = train_stack(depth, residual, bn, x, y, steps, seed)
            log.info("depth %d %s: final loss %.3f", depth, "residual" if residual else "plain", result.final_loss)
            out.append(result)
            if on_result:
                on_result(result)
    return out
