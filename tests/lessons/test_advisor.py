"""The strategy advisor's measurements and its advice, on real models and data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.cli import main as cli
from core.lessons import advisor, logme
from core.train import backbones, data

# One xdist worker runs this module: its module-scoped measurements (Lite0 over the digits) then happen once.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("advisor")]


# --- domain shift from BatchNorm statistics ------------------------------------------


@pytest.fixture(scope="module")
def digits_bn_model():
    """A small CNN whose BatchNorm layers hold the statistics of the digits'
    training images (a cumulative average over the whole split)."""
    torch.manual_seed(0)
    spec = backbones.get("small_cnn")
    model = backbones.build(spec, 10, 16)
    bundle = data.load("digits", 16, seed=0)
    for _, bn in advisor.batchnorm_layers(model):
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(data.to_input(bundle.train.x, spec.mean, spec.std))
    model.eval()
    return spec, model, bundle


def _shift(spec, model, x) -> float:
    return advisor.domain_shift(advisor.measure(model, spec, x)[1])


def test_domain_shift_is_near_zero_on_data_from_the_batchnorm_statistics(digits_bn_model):
    spec, model, bundle = digits_bn_model
    held_out = _shift(spec, model, bundle.test.x)  # images the statistics never saw, same distribution
    assert held_out < 0.1


def test_domain_shift_grows_with_a_planted_shift(digits_bn_model):
    spec, model, bundle = digits_bn_model
    x = bundle.test.x.float()
    scores = []
    for strength in (0.0, 0.25, 0.5, 0.75):
        shifted = (x * (1 - strength) + 128 * strength).round().to(torch.uint8)  # contrast fades towards grey
        scores.append(_shift(spec, model, shifted))
    assert scores == sorted(scores) and scores[-1] > scores[0] + 0.5, scores
    assert _shift(spec, model, data.shift_appearance(bundle.test.x)) > 0.3


# --- LogME and the kNN probe ---------------------------------------------------------


def _planted(n_per_class: int = 20, classes: int = 5, dim: int = 64, seed: int = 0):
    g = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    centres = g.normal(size=(classes, dim)) * 1.5
    informative = centres[y] + g.normal(size=(len(y), dim))
    random = g.normal(size=(len(y), dim))
    return informative, random, y


def test_logme_and_knn_rank_informative_features_above_random_ones():
    informative, random, y = _planted()
    assert logme.logme(informative, y) > logme.logme(random, y) + 0.1
    assert advisor.knn_accuracy(informative, y) > 0.9
    assert advisor.knn_accuracy(random, y) < 0.5
    # mixing in more informative dimensions raises both
    half = np.concatenate([informative[:, :32], random[:, 32:]], axis=1)
    assert logme.logme(random, y) < logme.logme(half, y) < logme.logme(informative, y)


@pytest.mark.parametrize("n,d", [(40, 10), (30, 80)])  # more samples than dimensions, and fewer
def test_logme_fixed_point_maximises_the_evidence_as_defined(n, d):
    g = np.random.default_rng(1)
    f = g.normal(size=(n, d))
    y = (f[:, 0] + 0.5 * g.normal(size=n) > 0).astype(float)
    value, alpha, beta = logme.maximise(f, y)
    assert value == pytest.approx(logme.evidence_at(f, y, alpha, beta), rel=1e-6, abs=1e-9)
    for da, db in [(1.3, 1), (1 / 1.3, 1), (1, 1.3), (1, 1 / 1.3)]:
        assert logme.evidence_at(f, y, alpha * da, beta * db) < value


# --- the advice --------------------------------------------------------------------


@pytest.fixture(scope="module")
def advice_all_and_5():
    return (advisor.advise("digits", None, ["efficientnet_lite0"], image_size=32),
            advisor.advise("digits", 5, ["efficientnet_lite0"], image_size=32))


def test_digits_through_lite0_get_a_measured_quadrant_and_strategy(advice_all_and_5):
    full, _ = advice_all_and_5
    assert full.labels_per_class > advisor.SMALL_DATA
    assert full.size == "large"
    assert full.domain_shift is not None and full.domain_shift > 0
    row = full.backbones[0]
    assert row.name == "efficientnet_lite0" and 0.5 < row.knn_accuracy <= 1 and row.feature_dim == 1280
    assert full.strategy == advisor.QUADRANTS[(full.size, full.similarity)]
    assert full.race[0] == full.strategy and len(set(full.race)) == 3
    assert full.reason


def test_five_labels_per_class_move_the_advice_to_the_small_data_side(advice_all_and_5):
    full, five = advice_all_and_5
    assert five.labels_per_class == 5 and five.size == "small"
    assert five.strategy in ("feature_extraction", "partial")
    assert five.strategy != full.strategy
    assert five.images_per_class_probed == 5


def test_a_backbone_without_weights_here_is_listed_with_the_reason():
    # Offline, ResNet-18's weights are neither cached nor downloadable: it is ranked last, with the message.
    advice = advisor.advise("digits", 3, ["resnet18", "efficientnet_lite0"], image_size=32)
    assert [r.name for r in advice.backbones] == ["efficientnet_lite0", "resnet18"]
    assert advice.backbones[1].logme is None and "resnet18-" in advice.backbones[1].note
    assert advice.backbone == "efficientnet_lite0"


def test_advise_cli_json(capsys):
    assert cli.main(["advise", "--labels-per-class", "4", "--backbones", "efficientnet_lite0",
                     "--image-size", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"labels_per_class", "domain_shift", "quadrant", "strategy", "reason", "backbones"} <= set(out)
    assert out["labels_per_class"] == 4 and out["quadrant"].startswith("small data")
    assert {"name", "knn_accuracy", "logme"} <= set(out["backbones"][0])


def test_advise_cli_rejects_an_unknown_backbone(capsys):
    assert cli.main(["advise", "--backbones", "nope"]) == 2
    assert "Unknown backbone 'nope'" in capsys.readouterr().err
