"""Grad-CAM, first-layer filters and per-stage feature maps: a synthetic
model with planted detectors, and real (tiny) trained runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.insight import embeddings, explain
from core.train import backbones, data
from core.train.backbones import BackboneSpec
from core.train.checkpoint import load_run_model

SIZE = 64


class Planted(nn.Module):
    """Channel 0 fires on red, channel 1 on green (hand-set 3x3 filters);
    class k's logit is the mean of channel k. Grad-CAM of class 0 must
    light up where the red patch is, of class 1 where the green one is."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            w = torch.zeros(2, 3, 3, 3)
            w[0, 0], w[0, 1], w[0, 2] = 1 / 9, -0.5 / 9, -0.5 / 9  # red minus the others
            w[1, 1], w[1, 0], w[1, 2] = 1 / 9, -0.5 / 9, -0.5 / 9  # green minus the others
            self.features[0].weight.copy_(w)
            self.features[0].bias.fill_(-0.3)  # grey noise stays below threshold
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.features(x)))


PLANTED = BackboneSpec(name="planted", title="Planted", family="custom", groups=(("stem", ("features",)), ("head", ("fc",))),
                       head="fc", gradcam_layer="features", input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1))


def _image(seed: int = 0):
    """Grey noise with a red 8x8 patch and a green 8x8 patch at seeded places."""
    g = np.random.default_rng(seed)
    img = g.integers(100, 156, (3, SIZE, SIZE)).astype(np.uint8)
    red_yx, green_yx = g.integers(4, 24, 2), g.integers(36, 52, 2)
    for (y, x), colour in ((red_yx, (230, 20, 20)), (green_yx, (20, 230, 20))):
        img[:, y : y + 8, x : x + 8] = np.array(colour, dtype=np.uint8)[:, None, None]
    return torch.from_numpy(img)[None], tuple(red_yx), tuple(green_yx)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcam_peaks_on_the_planted_feature_of_each_class(seed):
    model = Planted().eval()
    x, red, green = _image(seed)
    for cls, (y, x0) in ((0, red), (1, green)):
        cam = explain.gradcam(model, PLANTED, x, class_index=cls)
        assert cam.heatmap.shape == (SIZE, SIZE) and cam.heatmap.dtype == np.float32
        assert cam.heatmap.max() == pytest.approx(1.0) and cam.heatmap.min() >= 0
        py, px = np.unravel_index(np.argmax(cam.heatmap), cam.heatmap.shape)
        assert y - 1 <= py <= y + 8 and x0 - 1 <= px <= x0 + 8, (cls, (py, px), (y, x0))
        far = cam.heatmap.copy()
        far[max(0, y - 4) : y + 12, max(0, x0 - 4) : x0 + 12] = 0
        assert far.max() < 0.2  # nothing else lights up
        assert cam.class_index == cls and cam.feature_size == (SIZE, SIZE)


def test_gradcam_defaults_to_the_predicted_class_and_leaves_the_model_alone():
    model = Planted()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, red, _ = _image(3)
    x[:, :, 36:, 36:] = 128  # remove the green patch: red wins
    cam = explain.gradcam(model, PLANTED, x)
    assert cam.predicted_index == cam.class_index == 0 and cam.probability > 0.5
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradcam_says_when_a_backbone_has_no_convolutional_stage():
    mlp = backbones.get("mlp")
    model = backbones.build(mlp, 3, 16).eval()
    with pytest.raises(explain.NotAvailable, match="Grad-CAM is not available for MLP"):
        explain.gradcam(model, mlp, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    flat = BackboneSpec(name="flat", title="Flat", family="custom", groups=mlp.groups, head="fc", gradcam_layer="fc1")
    with pytest.raises(explain.NotAvailable, match=r"not a convolutional feature map"):
        explain.gradcam(model, flat, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    gone = BackboneSpec(name="gone", title="Gone", family="custom", groups=mlp.groups, head="fc", gradcam_layer="blocks.9")
    with pytest.raises(explain.NotAvailable, match="'blocks.9' is not in the model"):
        explain.gradcam(model, gone, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(explain.NotAvailable, match="no convolution on the image"):
        explain.first_conv(model)


def _shape_mask(x: torch.Tensor, grow: int = 0) -> np.ndarray:
    """Where the coloured shape is: pixels far from the grey noise, grown by `grow` px."""
    img = x[0].int()
    mask = ((img.amax(0) - img.amin(0)) > 90).float()[None, None]
    if grow:
        mask = torch.nn.functional.max_pool2d(mask, 2 * grow + 1, stride=1, padding=grow)
    return mask[0, 0].bool().numpy()


def test_gradcam_of_a_run_trained_on_a_zip_looks_at_the_shapes(tiny_runs):
    """The trained model's heat peaks on the shape in most test images, and
    far more often than the same network at its random start."""
    loaded = load_run_model(tiny_runs.shapes)
    start = embeddings.initial_model(loaded.config, loaded.num_classes)
    test = data.run_split(loaded.config, "test")
    peaks_on_shape = {"trained": 0, "start": 0}
    heat_share = []
    for i in range(len(test)):
        x = test.x[i : i + 1]
        near = _shape_mask(x, grow=2)
        for key, model in (("trained", loaded.model), ("start", start)):
            cam = explain.gradcam(model, loaded.spec, x)
            assert cam.heatmap.shape == (32, 32)
            peaks_on_shape[key] += bool(near.flat[int(np.argmax(cam.heatmap))])
            if key == "trained":
                mask = _shape_mask(x)
                heat_share.append(cam.heatmap[mask].sum() / cam.heatmap.sum() / mask.mean())
    assert peaks_on_shape["trained"] >= 2 / 3 * len(test), peaks_on_shape
    assert peaks_on_shape["trained"] >= peaks_on_shape["start"] + 3, peaks_on_shape
    assert np.mean(heat_share) > 1.4  # the shape gets more heat than its share of the picture


def test_overlay_is_an_rgb_picture_hot_where_the_map_is():
    x, red, _ = _image(0)
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[:8, :8] = 1.0
    pic = explain.overlay(x, heat, size=128)
    assert pic.shape == (128, 128, 3) and pic.dtype == np.uint8
    base = explain.upscale(explain.to_rgb(x), 128).astype(int)
    assert np.abs(pic[:12, :12].astype(int) - base[:12, :12]).mean() > 40  # coloured
    assert np.abs(pic[-40:, -40:].astype(int) - base[-40:, -40:]).mean() < 60  # mostly see-through


def test_first_conv_filters_of_the_start_and_the_trained_run(tiny_runs):
    loaded = load_run_model(tiny_runs.digits)
    start = embeddings.initial_model(loaded.config, loaded.num_classes)
    name, conv = explain.first_conv(loaded.model)
    assert name == "stem.0" and conv.weight.shape == (32, 3, 3, 3)
    _, before = explain.first_conv_filters(start)
    _, after = explain.first_conv_filters(loaded.model)
    assert before.shape == after.shape == (4 * 30 + 2, 8 * 30 + 2, 3)
    assert not np.array_equal(before, after)
    tile = explain.filter_grid(conv.weight)[2:30, 2:30]  # filter 0, enlarged from 3x3 to 28x28
    w0 = conv.weight[0].detach()
    for pick, value in ((torch.argmax, 255), (torch.argmin, 0)):  # its own range: largest weight white, smallest black
        c, i, j = np.unravel_index(int(pick(w0)), w0.shape)
        block = tile[i * 28 // 3 + 2 : (i + 1) * 28 // 3 - 2, j * 28 // 3 + 2 : (j + 1) * 28 // 3 - 2, c]
        assert (block == value).all()


def test_feature_maps_are_each_stages_output(tiny_runs):
    loaded = load_run_model(tiny_runs.digits)
    x = data.run_split(loaded.config, "test").x[:1]
    stages = explain.feature_maps(loaded.model, loaded.spec, x, per_stage=6)
    assert [s.group for s in stages] == ["stem", "stage1", "stage2", "stage3"]
    assert [s.size for s in stages] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert [s.channels for s in stages] == [32, 64, 128, 256]
    with torch.inference_mode():
        stem = loaded.model.stem(data.batch_input(x, loaded.spec.mean, loaded.spec.std))[0]
    s0 = stages[0]
    assert s0.maps.shape == (6, 32, 32) and np.allclose(s0.maps, stem[s0.indices].numpy(), atol=1e-5)
    means = stem.mean(dim=(1, 2))
    assert set(s0.indices) == set(torch.topk(means, 6).indices.tolist())  # the most active channels
    strip = explain.maps_strip(s0.maps)
    assert strip.shape == (68, 6 * 66 + 2, 3)


def test_feature_maps_of_an_mlp_say_there_are_none():
    mlp = backbones.get("mlp")
    with pytest.raises(explain.NotAvailable, match="no convolutional stages"):
        explain.feature_maps(backbones.build(mlp, 3, 16), mlp, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_a_vit_has_first_layer_filters_and_a_patch_token_grad_cam_but_no_stage_maps():
    vit = backbones.get("vit_small_dino")
    model = backbones.build(vit, 3, 32).eval()
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    for method in explain.CAM_METHODS:
        cam = explain.gradcam(model, vit, x, method=method)  # the patch tokens on their 2x2 grid, upsampled
        assert cam.heatmap.shape == (32, 32) and cam.feature_size == (2, 2) and cam.layer == "blocks.11.norm1"
    with pytest.raises(explain.NotAvailable, match="no convolutional stages"):
        explain.feature_maps(model, vit, x)
    name, conv = explain.first_conv(model)  # the patch embedding: 384 filters of 16x16
    assert name == "patch_embed.proj" and conv.out_channels == 384
    assert explain.first_conv_filters(model)[1].shape == (8 * 30 + 2, 8 * 30 + 2, 3)  # the first 64 drawn
    assert embeddings.extract(model, vit, x).shape == (1, 384)


@pytest.mark.parametrize("method", list(explain.CAM_METHODS))
def test_grad_cam_plus_plus_and_grad_cam_both_find_the_planted_feature(method):
    model = Planted().eval()
    x, red, _ = _image(4)
    cam = explain.gradcam(model, PLANTED, x, class_index=0, method=method)
    py, px = np.unravel_index(np.argmax(cam.heatmap), cam.heatmap.shape)
    assert red[0] - 1 <= py <= red[0] + 8 and red[1] - 1 <= px <= red[1] + 8 and cam.method == method
    with pytest.raises(explain.NotAvailable, match="Unknown heat-map method"):
        explain.gradcam(model, PLANTED, x, method="scorecam")
