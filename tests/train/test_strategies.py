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


def test_a_frozen_module_has_no_learning_rate_of_its_own():
    """One source of truth: a frozen module's lr is 0.0 in the plan's own entries, as its group says."""
    plan = plan_for("resnet18", "feature_extraction")
    assert {(e.frozen, e.lr) for e in plan.entries} == {(True, 0.0), (False, 3e-2)}
    assert {r["group"]: r["lr"] for r in plan.group_table()} == {
        "stem": 0.0, "stage1": 0.0, "stage2": 0.0, "stage3": 0.0, "stage4": 0.0, "head": 3e-2}


def test_each_strategy_answers_for_itself():
    assert strategies.baseline().name == "scratch" and not strategies.baseline().pretrained
    assert [s.name for s in strategies.REGISTRY.values() if s.feature_cache] == ["feature_extraction"]
    assert {s.name: s.uses for s in strategies.REGISTRY.values() if s.uses} == {
        "partial": ("freeze_stages",), "discriminative": ("lr_decay",), "gradual": ("unfreeze_every",)}
    assert all(set(s.uses) <= set(strategies.KNOBS) for s in strategies.REGISTRY.values())
    colours = [s.colour for s in strategies.REGISTRY.values()]
    assert len(set(colours)) == len(colours)  # no two strategies look alike on a chart
    assert strategies.race() == ["feature_extraction", "full", "scratch"]
    assert [n for n in strategies.REGISTRY if strategies.change_epochs(RunConfig(strategy=n), 4)] == ["gradual"]


def test_the_advisor_recommends_only_registered_strategies():
    from core.lessons import advisor

    named = set(advisor.QUADRANTS.values()) | {n for race in advisor.RACE.values() for n in race}
    assert named <= set(strategies.REGISTRY)
    assert all(advisor.QUADRANTS[q] == advisor.RACE[q][0] for q in advisor.QUADRANTS)


# A strategy made up for the test: the stem stays frozen, the rest trains at half the LR per group.
MADE_UP = strategies.Strategy(
    "stem_frozen", "Stem frozen (made up)", 5e-3, True, "A strategy no file but this test knows.", "#123456",
    trains=lambda groups, cfg, epoch: set(groups[1:]), lr_factor=lambda depth, cfg: 0.5**depth)


@pytest.fixture
def made_up_strategy(monkeypatch):
    monkeypatch.setitem(strategies.REGISTRY, MADE_UP.name, MADE_UP)
    return MADE_UP


def test_a_made_up_strategy_is_listed_by_the_cli_and_previewed_by_plan(made_up_strategy, capsys):
    import json

    from core.cli.main import main

    assert main(["strategies", "--json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert listed["stem_frozen"]["title"] == "Stem frozen (made up)" and listed["stem_frozen"]["default_lr"] == 5e-3
    assert main(["plan", "--backbone", "resnet18", "--strategy", "stem_frozen", "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [(g["group"], g["frozen"], g["lr"]) for g in groups] == [
        ("stem", True, 0.0), ("stage1", False, 5e-3 / 16), ("stage2", False, 5e-3 / 8),
        ("stage3", False, 5e-3 / 4), ("stage4", False, 5e-3 / 2), ("head", False, 5e-3)]


@pytest.mark.usefixtures("one_thread")
def test_a_made_up_strategy_is_a_choice_on_the_experiment_page(made_up_strategy):
    from streamlit.testing.v1 import AppTest

    from helpers import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert "Stem frozen (made up)" in at.selectbox(key="strategy").options
    at.selectbox(key="strategy").set_value("stem_frozen").run()
    assert not at.exception, at.exception
    assert "A strategy no file but this test knows." in [c.value for c in at.caption]
    assert all(at.number_input(key=k).disabled for k in ("lr_decay", "unfreeze_every"))
    trainable = int(next(m.value for m in at.metric if m.label == "Trainable parameters").replace(",", ""))
    total = trainable + int(next(m.value for m in at.metric if m.label == "Frozen parameters").replace(",", ""))
    assert 0 < total - trainable < total // 100  # only the stem is frozen
