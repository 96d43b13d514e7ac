"""Strategies: each one's LayerPlan, and frozen parameters staying frozen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.train import backbones, strategies
from core.train.config import RunConfig


def plan_for(backbone: str, strategy: str, epoch: int = 0, **kw) -> strategies.LayerPlan:
    spec = backbones.get(backbone)
    with torch.device("meta"):
        model = backbones.build(spec, 10, 64)
    return strategies.make_plan(spec, model, RunConfig(backbone=backbone, strategy=strategy, **kw), epoch)


def frozen_by_group(plan) -> dict[str, bool]:
    return {r["group"]: r["frozen"] for r in plan.group_table()}


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0", "vgg16", "mobilenet_v3_large"])
def test_feature_extraction_trains_only_the_head(backbone):
    plan = plan_for(backbone, "feature_extraction")
    assert [g for g, f in frozen_by_group(plan).items() if not f] == ["head"]
    head_params = sum(e.params for e in plan.entries if e.group == "head")
    assert plan.trainable_params == head_params > 0
    assert plan.frozen_params == plan.total_params - head_params


def test_partial_freezes_stem_and_first_k_stages():
    plan = plan_for("resnet18", "partial", freeze_stages=2)
    assert frozen_by_group(plan) == {"stem": True, "stage1": True, "stage2": True,
                                     "stage3": False, "stage4": False, "head": False}
    # Asking to freeze more stages than exist still leaves the head training.
    plan = plan_for("resnet18", "partial", freeze_stages=99)
    assert [g for g, f in frozen_by_group(plan).items() if not f] == ["head"]


@pytest.mark.parametrize("strategy", ["full", "scratch"])
def test_full_and_scratch_train_everything_at_one_lr(strategy):
    plan = plan_for("resnet18", strategy, lr=5e-4)
    assert plan.trainable_params == plan.total_params
    assert {e.lr for e in plan.entries} == {5e-4}


def test_scratch_starts_from_random_weights_others_from_pretrained():
    assert not strategies.get("scratch").pretrained
    assert all(strategies.get(s).pretrained for s in strategies.REGISTRY if s != "scratch")


def test_discriminative_lr_decays_from_head_to_stem():
    plan = plan_for("resnet18", "discriminative", lr=1e-2, lr_decay=0.5)
    lrs = [r["lr"] for r in plan.group_table()]
    assert lrs[-1] == pytest.approx(1e-2)
    for lower, upper in zip(lrs, lrs[1:]):
        assert lower == pytest.approx(upper * 0.5)
    assert plan.trainable_params == plan.total_params


def test_gradual_unfreezes_one_group_per_period_head_down():
    groups = backbones.get("resnet18").group_names
    trainable_per_epoch = []
    for epoch in range(8):
        plan = plan_for("resnet18", "gradual", epoch=epoch, unfreeze_every=2)
        trainable_per_epoch.append([g for g, f in frozen_by_group(plan).items() if not f])
    assert trainable_per_epoch[0] == trainable_per_epoch[1] == ["head"]
    assert trainable_per_epoch[2] == trainable_per_epoch[3] == ["stage4", "head"]
    assert trainable_per_epoch[4] == ["stage3", "stage4", "head"]
    assert plan_for("resnet18", "gradual", epoch=100, unfreeze_every=2).trainable_params == plan.total_params
    assert strategies.change_epochs(RunConfig(strategy="gradual", unfreeze_every=2), 8) == [2, 4, 6]
    assert len(groups) == 6


def test_plan_lists_every_parameterised_module_once():
    spec = backbones.get("resnet18")
    model = backbones.build(spec, 10, 64)
    plan = strategies.make_plan(spec, model, RunConfig(backbone="resnet18", strategy="full"))
    assert plan.total_params == sum(p.numel() for p in model.parameters())
    modules = [e.module for e in plan.entries]
    assert len(modules) == len(set(modules))
    assert "conv1" in modules and "fc" in modules and "layer4.1.bn2" in modules


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ConfigError, match="feature_extraction"):
        strategies.get("freeze_everything")


def _train_steps(spec, model, plan, steps=3, size=32):
    opt = strategies.build_optimizer(spec, model, plan, weight_decay=0.1)
    strategies.set_train_mode(spec, model, plan)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(8, 3, size, size, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("strategy,kw", [
    ("feature_extraction", {}),
    ("partial", {"freeze_stages": 2}),
    ("gradual", {}),
])
def test_frozen_parameters_and_bn_statistics_never_change(strategy, kw):
    """Bit for bit, including BatchNorm running statistics, with weight decay on."""
    spec = backbones.get("resnet18")
    torch.manual_seed(0)
    model = backbones.build(spec, 10, 32)
    cfg = RunConfig(backbone="resnet18", strategy=strategy, lr=1e-2, **kw)
    plan = strategies.make_plan(spec, model, cfg, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_steps(spec, model, plan)
    frozen_groups = plan.frozen_groups()
    owner = backbones.group_of_parameters(spec, model)
    assert frozen_groups, "the strategy should freeze something"
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    for name, group in owner.items():
        if group in frozen_groups:
            assert name not in changed, f"frozen {name} changed"
    frozen_paths = [p for g, paths in spec.groups if g in frozen_groups for p in paths]
    buffers = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    frozen_buffers = [k for k in buffers if any(k.startswith(p + ".") for p in frozen_paths)]
    assert frozen_buffers and not (set(frozen_buffers) & changed)
    assert "fc.weight" in changed  # and the head did learn


def test_full_updates_every_group():
    spec = backbones.get("resnet18")
    torch.manual_seed(0)
    model = backbones.build(spec, 10, 32)
    plan = strategies.make_plan(spec, model, RunConfig(backbone="resnet18", strategy="full", lr=1e-3), 0)
    before = {k: v.clone() for k, v in model.named_parameters()}
    _train_steps(spec, model, plan, steps=1)
    owner = backbones.group_of_parameters(spec, model)
    moved = {owner[k] for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert moved == set(spec.group_names)


def test_apply_plan_unfreezes_into_the_same_optimizer():
    spec = backbones.get("resnet18")
    model = backbones.build(spec, 10, 32)
    cfg = RunConfig(backbone="resnet18", strategy="gradual", lr=1e-3)
    opt = strategies.build_optimizer(spec, model, strategies.make_plan(spec, model, cfg, 0), 0.0)
    lrs = {pg["group"]: pg["lr"] for pg in opt.param_groups}
    assert lrs["head"] == 1e-3 and lrs["stage4"] == 0.0
    strategies.apply_plan(spec, model, strategies.make_plan(spec, model, cfg, 1), opt)
    lrs = {pg["group"]: pg["lr"] for pg in opt.param_groups}
    assert lrs["stage4"] == 1e-3 and lrs["stage3"] == 0.0
    assert model.layer4[0].conv1.weight.requires_grad and not model.layer3[0].conv1.weight.requires_grad
