"""Strategies: how much of a pretrained backbone trains, and how fast.

A strategy is one object that answers everything about itself, in the spirit
of Lightning's `BaseFinetuning`: which layer groups train at an epoch, each
group's learning rate, at which epochs that changes, which config knobs it
reads, whether it starts from pretrained weights, whether the engine may cache
the frozen backbone's features, and its colour on every chart. Adding a
strategy is one entry in `REGISTRY`; nothing outside this file tests a
strategy's name.

The strategy turns (backbone, config, epoch) into a `LayerPlan`: every module
with parameters, its layer group, whether it is frozen and its learning rate
(0.0 when frozen). The engine applies the plan; the UI draws it. Freezing is data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from core.errors import ConfigError
from core.train import backbones
from core.train.backbones import BackboneSpec, group_of_parameters
from core.train.config import RunConfig

# The config knobs a strategy may read besides the learning rate; a page
# enables only the widgets of the strategy's `uses`.
KNOBS = ("freeze_stages", "lr_decay", "unfreeze_every")


# --- the pieces strategies are made of ----------------------------------------
# `trains(groups, cfg, epoch)`: the groups (forward order) that train at a 0-based epoch.


def all_groups(groups: Sequence[str], cfg: RunConfig, epoch: int) -> set[str]:
    return set(groups)


def head_only(groups: Sequence[str], cfg: RunConfig, epoch: int) -> set[str]:
    return set(groups[-1:])


def after_frozen_stages(groups: Sequence[str], cfg: RunConfig, epoch: int) -> set[str]:
    """The stem and `freeze_stages` body groups stay frozen; the head always trains."""
    return set(groups[min(1 + cfg.freeze_stages, len(groups) - 1):])


def thawing_head_down(groups: Sequence[str], cfg: RunConfig, epoch: int) -> set[str]:
    """The head, then one more group (head-down) every `unfreeze_every` epochs."""
    count = min(len(groups), 1 + epoch // cfg.unfreeze_every)
    return set(groups[len(groups) - count:])


# `lr_factor(depth, cfg)`: a group's LR as a multiple of the base LR; depth 0 is the head.


def same_lr(depth: int, cfg: RunConfig) -> float:
    return 1.0


def decaying_lr(depth: int, cfg: RunConfig) -> float:
    return cfg.lr_decay**depth


# `changes(cfg, epochs)`: the 0-based epochs after 0 at which the plan changes.


def never(cfg: RunConfig, epochs: int) -> list[int]:
    return []


def every_unfreeze(cfg: RunConfig, epochs: int) -> list[int]:
    return [e for e in range(1, epochs) if e % cfg.unfreeze_every == 0]


@dataclass(frozen=True)
class Strategy:
    name: str
    title: str
    default_lr: float
    pretrained: bool  # False: random initialisation, the baseline transfer is measured against
    description: str
    colour: str  # on every chart, so the same strategy looks the same on every page
    uses: tuple[str, ...] = ()  # which of KNOBS it reads
    feature_cache: bool = False  # the backbone never trains: its features can be computed once
    in_race: bool = False  # one of the Experiment page's default strategy race
    trains: Callable[[Sequence[str], RunConfig, int], set[str]] = all_groups
    lr_factor: Callable[[int, RunConfig], float] = same_lr
    changes: Callable[[RunConfig, int], list[int]] = never

    def base_lr(self, cfg: RunConfig) -> float:
        """The head's LR: the config's, else this strategy's default."""
        return cfg.lr if cfg.lr is not None else self.default_lr

    def settings(self, groups: Sequence[str], cfg: RunConfig, epoch: int = 0) -> dict[str, tuple[bool, float]]:
        """Layer group -> (frozen, lr) at a 0-based epoch; a frozen group's lr is 0.0."""
        lr = self.base_lr(cfg)
        trainable = self.trains(groups, cfg, epoch)
        n = len(groups)
        return {g: (False, lr * self.lr_factor(n - 1 - i, cfg)) if g in trainable else (True, 0.0)
                for i, g in enumerate(groups)}


REGISTRY: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy("feature_extraction", "Feature extraction", 3e-2, True,
                 "Backbone frozen (BatchNorm in eval mode); only a new head trains. Cheapest; best with little data similar to ImageNet.",
                 "#1F6FB2", feature_cache=True, in_race=True, trains=head_only),  # blue
        Strategy("partial", "Partial fine-tuning", 1e-3, True,
                 "The stem and the first K stages stay frozen (generic edges and textures); later stages and the head train.",
                 "#1A9E77", uses=("freeze_stages",), trains=after_frozen_stages),  # teal green
        Strategy("full", "Full fine-tuning", 1e-3, True,
                 "Everything trains from the pretrained weights, at a low learning rate.",
                 "#7B3FA0", in_race=True),  # purple
        Strategy("discriminative", "Discriminative LRs", 2e-3, True,
                 "Everything trains; the LR shrinks by the decay factor per group from the head down to the stem.",
                 "#D1478F", uses=("lr_decay",), lr_factor=decaying_lr),  # magenta
        Strategy("gradual", "Gradual unfreezing", 1e-3, True,
                 "Starts with only the head training and unfreezes one more group, head-down, every few epochs (ULMFiT).",
                 "#C0392B", uses=("unfreeze_every",), trains=thawing_head_down, changes=every_unfreeze),  # brick red
        Strategy("scratch", "From scratch", 2e-3, False,
                 "Random initialisation, everything trains: the baseline that shows what pretraining buys.",
                 "#8C7B70", in_race=True),  # warm grey: the baseline, always the same
    ]
}


def get(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"Unknown strategy {name!r}. Choose one of: {', '.join(REGISTRY)}.") from None


def baseline() -> Strategy:
    """The from-scratch strategy: the one that does not start pretrained."""
    return next(s for s in REGISTRY.values() if not s.pretrained)


def race() -> list[str]:
    """The strategies of the default race, in registry order."""
    return [s.name for s in REGISTRY.values() if s.in_race]


def base_lr(cfg: RunConfig) -> float:
    return get(cfg.strategy).base_lr(cfg)


def group_settings(spec: BackboneSpec, cfg: RunConfig, epoch: int = 0) -> dict[str, tuple[bool, float]]:
    """Layer group -> (frozen, lr) for the given epoch (0-based); lr 0.0 when frozen."""
    return get(cfg.strategy).settings(spec.group_names, cfg, epoch)


@dataclass(frozen=True)
class LayerEntry:
    module: str
    group: str
    kind: str
    params: int
    frozen: bool
    lr: float


@dataclass(frozen=True)
class LayerPlan:
    backbone: str
    strategy: str
    epoch: int
    groups: tuple[str, ...]
    entries: tuple[LayerEntry, ...]

    @property
    def total_params(self) -> int:
        return sum(e.params for e in self.entries)

    @property
    def trainable_params(self) -> int:
        return sum(e.params for e in self.entries if not e.frozen)

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params

    def group_table(self) -> list[dict]:
        """One row per layer group, in forward order."""
        return group_rows(self.rows(), self.groups)

    def frozen_groups(self) -> set[str]:
        return {r["group"] for r in self.group_table() if r["frozen"]}

    def rows(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    def summary(self) -> dict:
        return {
            "backbone": self.backbone,
            "strategy": self.strategy,
            "epoch": self.epoch,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params,
        }


def group_rows(module_rows: list[dict], groups: tuple[str, ...] | None = None) -> list[dict]:
    """Per-group totals (group, params, frozen, lr, modules) from module rows,
    as `LayerPlan.rows()` gives them and the run store keeps them."""
    order = groups or tuple(dict.fromkeys(r["group"] for r in module_rows))
    rows = {g: {"group": g, "params": 0, "frozen": None, "lr": 0.0, "modules": 0} for g in order}
    for e in module_rows:
        r = rows[e["group"]]
        r["params"] += e["params"]
        r["modules"] += 1
        r["frozen"] = e["frozen"]
        r["lr"] = e["lr"]
    return list(rows.values())


def make_plan(spec: BackboneSpec, model: nn.Module, cfg: RunConfig, epoch: int = 0) -> LayerPlan:
    """The plan for `model` (built from `spec`) at `epoch`."""
    settings = group_settings(spec, cfg, epoch)
    owner = group_of_parameters(spec, model)
    entries = []
    for mname, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        group = owner[f"{mname}.{own[0][0]}" if mname else own[0][0]]
        frozen, lr = settings[group]
        entries.append(LayerEntry(mname, group, type(module).__name__, sum(p.numel() for _, p in own), frozen, lr))
    return LayerPlan(spec.name, cfg.strategy, epoch, tuple(spec.group_names), tuple(entries))


def change_epochs(cfg: RunConfig, epochs: int) -> list[int]:
    """Epochs (0-based, after 0) at which the plan changes (gradual unfreezing thaws a group)."""
    return get(cfg.strategy).changes(cfg, epochs)


# --- applying a plan ---------------------------------------------------------


def build_optimizer(spec: BackboneSpec, model: nn.Module, plan: LayerPlan, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with one parameter group per layer group, so a plan change only
    sets flags and LRs. Frozen parameters never receive a gradient, and AdamW
    leaves a parameter without a gradient untouched."""
    owner = group_of_parameters(spec, model)
    params: dict[str, list[nn.Parameter]] = {g: [] for g in spec.group_names}
    for name, p in model.named_parameters():
        params[owner[name]].append(p)
    groups = [{"params": ps, "lr": 0.0, "group": g} for g, ps in params.items() if ps]
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    apply_plan(spec, model, plan, opt)
    return opt


def apply_plan(spec: BackboneSpec, model: nn.Module, plan: LayerPlan, optimizer: torch.optim.Optimizer | None = None) -> None:
    table = {r["group"]: r for r in plan.group_table()}
    owner = group_of_parameters(spec, model)
    for name, p in model.named_parameters():
        p.requires_grad_(not table[owner[name]]["frozen"])
    if optimizer is not None:
        for pg in optimizer.param_groups:
            row = table[pg["group"]]
            pg["lr"] = row["lr"]
            pg["initial_lr"] = pg["lr"]


def set_train_mode(spec: BackboneSpec, model: nn.Module, plan: LayerPlan) -> None:
    """model.train(), but frozen groups stay in eval mode: their BatchNorm
    statistics must not drift while their weights are fixed."""
    model.train()
    frozen = plan.frozen_groups()
    for group, paths in spec.groups:
        if group in frozen:
            for path in paths:
                target = backbones.resolve(model, path)
                if isinstance(target, nn.Module):  # a bare parameter (a ViT's cls_token) has no mode
                    target.eval()
