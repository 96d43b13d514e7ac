"""The backbone registry: every entry builds, runs, and is cut into layer
groups that cover its parameters once, in forward order, head last."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from core.train import backbones

NUM_CLASSES = 10
SIZE = 32
NAMES = list(backbones.REGISTRY)


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def built(name: str) -> nn.Module:
    """One model per backbone for the whole module (VGG16 alone takes a second)."""
    torch.manual_seed(0)
    return backbones.build(backbones.get(name), NUM_CLASSES, SIZE)


def test_registry_has_the_advertised_backbones():
    expected = {
        "efficientnet_lite0", "resnet18", "resnet50", "vgg16", "mobilenet_v2",
        "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "small_cnn", "mlp",
    }
    assert expected <= set(backbones.REGISTRY)
    for name, spec in backbones.REGISTRY.items():
        assert spec.name == name
        assert spec.title and spec.description
        assert len(spec.mean) == 3 and len(spec.std) == 3 and all(s > 0 for s in spec.std)
        assert spec.has_pretrained == (spec.weights is not None)


def test_unknown_backbone_is_a_config_error_listing_valid_names():
    with pytest.raises(ConfigError) as err:
        backbones.get("nope")
    msg = str(err.value)
    assert "'nope'" in msg
    for name in NAMES:
        assert name in msg


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_gives_logits_for_small_images(name):
    model = built(name)
    x = torch.randn(2, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_in_exactly_one_group(name):
    spec = backbones.get(name)
    model = built(name)
    names = spec.group_names
    assert len(set(names)) == len(names), names
    assert names[0] == "stem" and names[-1] == "head"

    times_seen: dict[int, int] = {}
    for _, paths in spec.groups:
        assert paths, "empty group"
        for path in paths:
            for _, p in backbones.path_parameters(model, path):
                times_seen[id(p)] = times_seen.get(id(p), 0) + 1
    all_params = {id(p): n for n, p in model.named_parameters()}
    assert set(times_seen) == set(all_params), "parameters outside any group: " + str(
        [all_params[i] for i in set(all_params) - set(times_seen)][:5]
    )
    assert all(c == 1 for c in times_seen.values()), "a parameter sits in two groups"
    # the module's own bookkeeping agrees
    owner = backbones.group_of_parameters(spec, model)
    assert set(owner) == {n for n, _ in model.named_parameters()}
    assert all(owner[n] == "head" for n in owner if n.startswith(spec.head + "."))


@pytest.mark.parametrize("name", NAMES)
def test_groups_run_in_forward_order_and_head_makes_the_logits(name):
    spec = backbones.get(name)
    model = built(name).eval()
    first_call: list[str] = []
    outputs: dict[str, torch.Tensor] = {}
    hooks = []
    for group, paths in spec.groups:
        for path in paths:
            def hook(_m, _i, out, group=group, path=path):
                if group not in first_call:
                    first_call.append(group)
                outputs[path] = out
            target = backbones.resolve(model, path)
            if isinstance(target, nn.Module):  # a bare parameter (a ViT's class token) has no forward
                hooks.append(target.register_forward_hook(hook))
    if spec.gradcam_layer:
        hooks.append(model.get_submodule(spec.gradcam_layer).register_forward_hook(
            lambda _m, _i, out: outputs.__setitem__("<gradcam>", out)))
    try:
        with torch.no_grad():
            logits = model(torch.randn(2, 3, SIZE, SIZE))
    finally:
        for h in hooks:
            h.remove()
    # groups with parameters all run, in the order listed
    assert first_call == [g for g in spec.group_names if g in first_call]
    param_groups = [g for g, paths in spec.groups if any(backbones.path_parameters(model, p) for p in paths)]
    assert set(param_groups) <= set(first_call)
    assert first_call[0] == "stem" and first_call[-1] == "head"
    # the head is exactly the new Linear and its output is the model's output
    assert dict(spec.groups)["head"] == (spec.head,)
    head = model.get_submodule(spec.head)
    assert type(head) is nn.Linear and head.out_features == NUM_CLASSES
    head_params = {n for n, _ in model.named_parameters() if n.startswith(spec.head + ".")}
    assert head_params == {f"{spec.head}.weight", f"{spec.head}.bias"}
    assert torch.equal(outputs[spec.head], logits)
    # Grad-CAM needs a spatial feature map from the body
    if spec.gradcam_layer:
        fmap = outputs["<gradcam>"]
        # a spatial map, or a ViT's tokens (class token + the patch grid)
        assert (fmap.dim() == 4 if spec.cam_layout == "NCHW" else fmap.shape[1] == 1 + (SIZE // 16) ** 2)
        assert fmap.shape[0] == 2 and not spec.gradcam_layer.startswith(spec.head)


def test_only_the_mlp_lacks_a_gradcam_layer():
    # It has no spatial stage: Grad-CAM reads an empty gradcam_layer as "not available".
    assert [n for n, s in backbones.REGISTRY.items() if not s.gradcam_layer] == ["mlp"]


@pytest.mark.parametrize("name", NAMES)
def test_param_count_matches_the_built_model(name):
    spec = backbones.get(name)
    real = sum(p.numel() for p in built(name).parameters())
    assert spec.param_count(NUM_CLASSES, SIZE) == real


def test_param_count_follows_classes_and_mlp_image_size():
    r18 = backbones.get("resnet18")
    assert r18.param_count(1000) - r18.param_count(10) == 990 * (512 + 1)
    assert r18.param_count(1000) == 11_689_512  # torchvision's published figure
    mlp = backbones.get("mlp")
    assert mlp.param_count(10, 64) - mlp.param_count(10, 32) == 3 * (64 * 64 - 32 * 32) * 512
    model = backbones.build(mlp, 10, 64)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
