"""Any pretrained timm model as `timm:<model>[.<tag>]`: its registry entry is
derived from the model (groups, head, preprocessing, Grad-CAM layer, size
rules), its weights come from a Hugging Face cache written here in the layout
timm reads (never the network), and strategies freeze what they say on six
architecture families."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError, WeightsUnavailable
from core.train import backbones, strategies, timm_zoo, weights
from core.train.config import RunConfig
from core.train.validate import validate
from helpers import fake_hf_cache

RESNET, CONVNEXT, MOBILENET = "timm:resnet10t", "timm:convnext_atto", "timm:mobilenetv3_small_050"
REGNET, VIT, SWIN = "timm:regnetx_002", "timm:vit_tiny_patch16_224", "timm:swin_tiny_patch4_window7_224"
# Swin-T is the smallest Swin (28M parameters): building and stepping it takes seconds, so it is slow.
FAMILIES = [RESNET, CONVNEXT, MOBILENET, REGNET, VIT, pytest.param(SWIN, marks=pytest.mark.slow)]
SIZE = 32  # every family takes it: a multiple of the patch (16, 4), and a 1x1 last map at stride 32

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """One Hugging Face cache for the module with the small families' weights."""
    root = tmp_path_factory.mktemp("hf_home")
    return root, fake_hf_cache(root, [RESNET, VIT])


def test_a_name_becomes_an_entry_derived_from_the_model():
    spec = backbones.get("timm:convnext_nano.in12k_ft_in1k")
    assert spec.family == "timm" and spec.name == "timm:convnext_nano.in12k_ft_in1k"
    assert spec.group_names == ["stem", "stage1", "stage2", "stage3", "stage4", "neck", "head"]
    assert dict(spec.groups)["stem"] == ("stem",) and dict(spec.groups)["stage4"] == ("stages.3",)
    assert spec.head == "head.fc" and spec.gradcam_layer == "stages.3" and spec.cam_layout == "NCHW"
    assert spec.weights == "hf:timm/convnext_nano.in12k_ft_in1k"
    vit = backbones.get(VIT)
    assert vit.mean == (0.5, 0.5, 0.5) and vit.input_size == 224  # its data config, not ImageNet's defaults
    assert (vit.cam_layout, vit.prefix_tokens, vit.size_multiple) == ("tokens", 1, 16)
    assert dict(vit.groups)["stem"] == ("cls_token", "pos_embed", "patch_embed")
    assert backbones.get(SWIN).cam_layout == "NHWC"
    assert backbones.get(RESNET).input_size == 176  # resnet10t's pretrained size


@pytest.mark.parametrize("name, hint", [
    ("timm:no_such_model", "timm has no model 'no_such_model'"),
    ("timm:resnet10t.no_such_tag", "use one of c3_in1k"),
    ("timm:bad name!", "is not a timm model name"),
])
def test_a_name_timm_does_not_know_is_one_clear_message(name, hint):
    with pytest.raises(ConfigError) as err:
        backbones.get(name)
    assert hint in str(err.value)


@pytest.mark.parametrize("name", FAMILIES)
def test_groups_cover_every_parameter_exactly_once(name):
    spec = backbones.get(name)
    with torch.device("meta"):
        model = backbones.build(spec, 10, SIZE)
    seen: dict[str, str] = {}
    for group, paths in spec.groups:
        for path in paths:
            for pname, _ in backbones.path_parameters(model, path):
                assert pname not in seen, f"{pname} in {seen.get(pname)} and {group}"
                seen[pname] = group
    assert set(seen) == {n for n, _ in model.named_parameters()}
    assert spec.group_names[0] == "stem" and spec.group_names[-1] == "head"
    assert dict(spec.groups)["head"] == (spec.head,) and model.get_submodule(spec.head).out_features == 10


@pytest.mark.parametrize("name", FAMILIES)
def test_each_strategy_freezes_what_it_says_and_frozen_batchnorm_stays_in_eval(name):
    spec = backbones.get(name)
    torch.manual_seed(0)
    model = backbones.build(spec, 10, SIZE)
    for strategy in strategies.REGISTRY:
        plan = strategies.make_plan(spec, model, RunConfig(backbone=name, strategy=strategy, freeze_stages=1), 0)
        strategies.apply_plan(spec, model, plan)
        owner = backbones.group_of_parameters(spec, model)
        frozen = plan.frozen_groups()
        assert all(p.requires_grad == (owner[n] not in frozen) for n, p in model.named_parameters()), strategy
    # partial: the stem and stage1 frozen; one real step leaves them bit-for-bit as they were
    cfg = RunConfig(backbone=name, strategy="partial", freeze_stages=1, lr=1e-2)
    plan = strategies.make_plan(spec, model, cfg, 0)
    assert plan.frozen_groups() == {"stem", "stage1"}
    opt = strategies.build_optimizer(spec, model, plan, 1e-4)
    strategies.set_train_mode(spec, model, plan)
    bns = [(path, m) for g, paths in spec.groups for path in paths
           for m in ([backbones.resolve(model, path)] if isinstance(backbones.resolve(model, path), nn.Module) else [])
           for m in m.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(4, 3, SIZE, SIZE), torch.arange(4)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    owner = backbones.group_of_parameters(spec, model)
    after = model.state_dict()
    for n, _ in model.named_parameters():
        if owner[n] in ("stem", "stage1"):
            assert torch.equal(after[n], before[n]), f"frozen {n} changed"
    assert not torch.equal(after[f"{spec.head}.weight"], before[f"{spec.head}.weight"])
    frozen_paths = {p for g, paths in spec.groups if g in ("stem", "stage1") for p in paths}
    for m in model.modules():  # frozen BatchNorm: eval mode, running statistics untouched
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            owned = next(n for n, p in model.named_parameters() if p is m.weight)
            assert m.training == (owner[owned] not in ("stem", "stage1")), owned
    for k in before:
        if k.endswith(("running_mean", "running_var")) and any(k.startswith(p + ".") for p in frozen_paths):
            assert torch.equal(after[k], before[k]), k
    del bns


def test_layernorm_models_say_there_is_no_batchnorm_to_freeze():
    assert "no BatchNorm" in backbones.get(VIT).description
    assert "no BatchNorm" not in backbones.get(RESNET).description


def test_pretrained_weights_come_from_the_hf_cache(hf_cache, monkeypatch):
    root, states = hf_cache
    monkeypatch.setenv("HF_HOME", str(root))
    spec = backbones.get(RESNET)
    assert weights.availability(spec) == "cached"
    model = backbones.create_model(spec, 10, SIZE, pretrained=True)
    ours, theirs = model.state_dict(), states[RESNET]
    assert all(torch.equal(ours[k], v) for k, v in theirs.items() if not k.startswith("fc."))
    assert model.fc.out_features == 10  # a new head, not ImageNet's
    # a ViT at a smaller size: its position embedding resampled to the run's patch grid by timm's own filter
    vit = backbones.create_model(backbones.get(VIT), 10, SIZE, pretrained=True)
    assert vit.pos_embed.shape == (1, 1 + (SIZE // 16) ** 2, 192)
    assert torch.equal(vit.blocks[3].attn.qkv.weight, states[VIT]["blocks.3.attn.qkv.weight"])
    assert torch.equal(vit.pos_embed[0, 0], states[VIT]["pos_embed"][0, 0])  # the class token's entry kept


def test_offline_and_uncached_is_one_message_naming_model_cache_and_file(isolated_home):
    spec = backbones.get(CONVNEXT)
    assert weights.availability(spec) == "download"
    with pytest.raises(WeightsUnavailable) as err:
        backbones.create_model(spec, 10, SIZE, pretrained=True)
    msg = str(err.value)
    cache = weights.expected_file(spec)
    assert "timm:convnext_atto" in msg and "model.safetensors" in msg and str(cache.parents[3]) in msg
    assert str(cache) in msg and "--weights" in msg
    assert "\n" not in msg and "Traceback" not in msg


def test_a_weights_file_for_another_model_is_refused_not_loaded(hf_cache, tmp_path):
    _, states = hf_cache
    path = tmp_path / "resnet.pt"
    torch.save(states[RESNET], path)
    spec = backbones.get(CONVNEXT)
    model = backbones.build(spec, 10, SIZE)
    with pytest.raises(WeightsUnavailable, match="does not fit timm:convnext_atto"):
        weights.load_file(spec, model, path)
    good = backbones.build(backbones.get(RESNET), 10, SIZE)
    assert weights.load_file(backbones.get(RESNET), good, path) == "file"
    assert torch.equal(good.conv1[0].weight, states[RESNET]["conv1.0.weight"])


@pytest.mark.parametrize("size, nearest", [(72, "64 px or 80 px"), (40, "32 px or 48 px")])
def test_a_vit_refuses_sizes_off_its_patch_grid_naming_the_nearest(size, nearest):
    cfg = RunConfig(backbone=VIT, strategy="scratch", image_size=size)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "multiple of 16" in str(err.value) and nearest in str(err.value)
    validate(cfg.replace(image_size=64))


def test_a_cnn_refuses_images_smaller_than_its_stride():
    with pytest.raises(ConfigError, match="at least 32 px.*nearest allowed size is 32 px"):
        validate(RunConfig(backbone=RESNET, strategy="scratch", image_size=24))


def test_the_catalogue_lists_pretrained_names_with_where_their_weights_are(hf_cache, monkeypatch):
    root, _ = hf_cache
    monkeypatch.setenv("HF_HOME", str(root))
    rows = timm_zoo.catalogue("resnet10t")
    assert rows == [{"name": "timm:resnet10t.c3_in1k", "weights": "cached"}]
    rows = timm_zoo.catalogue("convnext_at", params=True)
    assert {r["name"] for r in rows} == {"timm:convnext_atto.d2_in1k", "timm:convnext_atto_ols.a2_in1k"}
    assert all(r["weights"] == "download" and 3e6 < r["params"] < 4e6 for r in rows)
    assert len(timm_zoo.catalogue("")) > 1000


def test_a_timm_model_can_be_a_distillation_student():
    from core.runs import experiments

    teacher = {"id": "20260101-000000-abcdef", "status": "finished",
               "config": RunConfig(backbone="small_cnn", strategy="scratch", image_size=32).to_json()}
    cfgs = experiments.distill_configs(teacher, REGNET, 4.0, 0.9)
    assert [c.backbone for c in cfgs] == [REGNET, REGNET] and cfgs[0].teacher == teacher["id"]
    assert cfgs[0].strategy == "full"  # it has pretrained weights to start from
    assert all(validate(c) is c for c in cfgs)
