"""Penultimate features of a real trained run, and their 2-D projections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.insight import embeddings
from core.train import data
from core.train.checkpoint import load_run_model


@pytest.fixture(scope="module")
def digits(tiny_runs):
    loaded = load_run_model(tiny_runs.digits)
    return loaded, data.run_split(loaded.config, "test")


def test_run_split_is_the_trainers_test_split(digits):
    loaded, test = digits
    bundle = data.load("digits", 32, 0)
    assert torch.equal(test.x, bundle.test.x) and torch.equal(test.y, bundle.test.y)
    with pytest.raises(ConfigError, match="Unknown split 'tset'"):
        data.run_split(loaded.config, "tset")


def test_features_are_what_the_head_sees(digits):
    loaded, test = digits
    model = loaded.model
    model.train()  # extract must use eval mode and put training mode back
    feats = embeddings.extract(model, loaded.spec, test.x)
    assert model.training
    model.eval()
    assert feats.shape == (len(test), 256) and feats.dtype == torch.float32
    with torch.inference_mode():
        logits = model(data.batch_input(test.x, loaded.spec.mean, loaded.spec.std))
        assert torch.allclose(model.fc(feats), logits, atol=1e-4)
    assert isinstance(model.fc, torch.nn.Linear)  # the head is back in place


def test_training_separates_classes_better_than_the_starting_point(digits):
    loaded, test = digits
    before = embeddings.extract(embeddings.initial_model(loaded.config, loaded.num_classes), loaded.spec, test.x)
    after = embeddings.extract(loaded.model, loaded.spec, test.x)
    s_before, s_after = embeddings.separation(before, test.y), embeddings.separation(after, test.y)
    assert s_after > 0.9 and s_after > s_before + 0.05, (s_before, s_after)


def test_initial_model_is_the_runs_starting_point(digits):
    loaded, _ = digits
    # The last epoch's checkpoint keeps the starting weights (the best one holds the model alone).
    ckpt = torch.load(loaded.checkpoint.parent / "checkpoint.pt", map_location="cpu", weights_only=True)
    init = embeddings.initial_model(loaded.config, loaded.num_classes)
    state = dict(init.named_parameters())
    stem = [n for n in state if n.startswith("stem.")]
    assert [torch.equal(state[n], w) for n, w in zip(stem, ckpt["w0"]["stem"])] == [True] * len(stem)
    assert not torch.equal(state["stem.0.weight"], loaded.model.stem[0].weight)  # training moved it


def _blobs(n_per: int, dims: int, spread: float, seed: int = 0):
    g = np.random.default_rng(seed)
    centres = g.normal(0, 1, (3, dims)) * 10
    x = np.concatenate([c + spread * g.normal(0, 1, (n_per, dims)) for c in centres])
    return x, np.repeat(np.arange(3), n_per)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_keeps_planted_clusters_apart(method):
    x, y = _blobs(40, 64, 1.0)
    xy = embeddings.project(x, method, seed=3)
    assert xy.shape == (120, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert embeddings.separation(xy, y) == 1.0
    assert np.array_equal(xy, embeddings.project(x, method, seed=3))  # seeded: the same picture twice


def test_separation_is_near_chance_without_structure():
    x, _ = _blobs(60, 32, 1.0)
    shuffled = np.random.default_rng(1).permutation(np.repeat(np.arange(3), 60))
    assert embeddings.separation(x, shuffled) < 0.55


def test_projection_refuses_what_it_cannot_draw():
    with pytest.raises(ConfigError, match="Unknown projection 'umap'"):
        embeddings.project(np.zeros((10, 4)), "umap")
    with pytest.raises(ConfigError, match="at least 3 points"):
        embeddings.project(np.zeros((2, 4)))
    with pytest.raises(ConfigError, match="NaN"):
        embeddings.project(np.full((5, 4), np.nan))


def test_subsample_keeps_every_class():
    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    idx = embeddings.subsample(y, 100)
    assert len(idx) <= 100 and set(y[idx].tolist()) == {0, 1, 2}
    assert torch.equal(idx, torch.sort(idx).values)
    assert torch.equal(embeddings.subsample(y[:50], 100), torch.arange(50))


def test_a_run_on_an_uploaded_zip_projects_its_own_classes(tiny_runs):
    loaded = load_run_model(tiny_runs.shapes)
    test = data.run_split(loaded.config, "test")
    assert loaded.class_names == ["bar", "disc", "square"] and len(test) >= 9
    feats = embeddings.extract(loaded.model, loaded.spec, test.x)
    xy = embeddings.project(feats, "tsne", seed=0)
    assert xy.shape == (len(test), 2)
    assert embeddings.separation(feats, test.y) > 0.8
