"""Strategies: how much of a pretrained backbone trains, and how fast.

A strategy turns (backbone, config, epoch) into a `LayerPlan`: every module
with parameters, its layer group, whether it is frozen and its learning rate.
The engine applies the plan; the UI draws it. Freezing is data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.errors import ConfigError
from core.train import backbones
from core.train.backbones import BackboneSpec, group_of_parameters
from core.train.config import RunConfig


@dataclass(frozen=True)
class Strategy:
    name: str
    title: str
    default_lr: float
    pretrained: bool
    description: str


REGISTRY: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy("feature_extraction", "Feature extraction", 3e-2, True,
                 "Backbone frozen (BatchNorm in eval mode); only a new head trains. Cheapest; best with little data similar to ImageNet."),
        Strategy("partial", "Partial fine-tuning", 1e-3, True,
                 "The stem and the first K stages stay frozen (generic edges and textures); later stages and the head train."),
        Strategy("full", "Full fine-tuning", 1e-3, True,
                 "Everything trains from the pretrained weights, at a low learning rate."),
        Strategy("discriminative", "Discriminative LRs", 2e-3, True,
                 "Everything trains; the LR shrinks by the decay factor per group from the head down to the stem."),
        Strategy("gradual", "Gradual unfreezing", 1e-3, True,
                 "Starts with only the head training and unfreezes one more group, head-down, every few epochs (ULMFiT)."),
        Strategy("scratch", "From scratch", 2e-3, False,
                 "Random initialisation, everything trains: the baseline that shows what pretraining buys."),
    ]
}


def get(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"Unknown strategy {name!r}. Choose one of: {', '.join(REGISTRY)}.") from None


def base_lr(cfg: RunConfig) -> float:
    return cfg.lr if cfg.lr is not None else get(cfg.strategy).default_lr


def group_settings(spec: BackboneSpec, cfg: RunConfig, epoch: int = 0) -> dict[str, tuple[bool, float]]:
    """Layer group -> (frozen, lr) for the given epoch (0-based)."""
    names = spec.group_names
    n = len(names)
    lr = base_lr(cfg)
    s = get(cfg.strategy).name
    if s == "feature_extraction":
        trainable = {names[-1]}
    elif s == "partial":
        frozen_count = min(1 + cfg.freeze_stages, n - 1)  # stem + K body groups; the head always trains
        trainable = set(names[frozen_count:])
    elif s == "gradual":
        count = min(n, 1 + epoch // cfg.unfreeze_every)
        trainable = set(names[n - count:])
    else:  # full, discriminative, scratch
        trainable = set(names)
    out = {}
    for i, g in enumerate(names):
        depth = n - 1 - i  # 0 for the head
        g_lr = lr * cfg.lr_decay**depth if s == "discriminative" else lr
        out[g] = (g not in trainable, g_lr)
    return out


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
        r["lr"] = 0.0 if e["frozen"] else e["lr"]
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
    """Epochs (0-based, after 0) at which the plan changes: gradual unfreezing."""
    if cfg.strategy != "gradual":
        return []
    return [e for e in range(1, epochs) if e % cfg.unfreeze_every == 0]


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
            pg["lr"] = 0.0 if row["frozen"] else row["lr"]
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
