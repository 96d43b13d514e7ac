"""Confusion matrix, the images in its cells, top losses and per-class
metrics of real (tiny) trained runs, checked against direct counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.insight import evaluate
from core.train import data, engine
from core.train.checkpoint import load_run_model
from core.train.config import RunConfig


@pytest.fixture(scope="module", params=["digits", "shapes"])
def run(request, tiny_runs):
    loaded = load_run_model(getattr(tiny_runs, request.param))
    return loaded, evaluate.evaluate_run(loaded)


def _direct_predictions(loaded, split):
    with torch.inference_mode():
        logits = loaded.model(data.batch_input(split.x, loaded.spec.mean, loaded.spec.std))
    return logits, logits.argmax(1).numpy()


def test_confusion_counts_match_a_direct_count(run):
    loaded, ev = run
    test = data.run_split(loaded.config, "test")
    _, pred = _direct_predictions(loaded, test)
    k = loaded.num_classes
    direct = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(test.y.tolist(), pred.tolist()):
        direct[t, p] += 1
    cm = ev.confusion()
    assert cm.shape == (k, k) and np.array_equal(cm, direct)
    assert cm.sum() == len(test) and np.array_equal(cm.sum(1), np.bincount(test.y.numpy(), minlength=k))
    norm = ev.confusion(normalise=True)
    assert np.allclose(norm.sum(1), 1.0) and np.allclose(np.diag(norm), np.diag(cm) / cm.sum(1))


def test_accuracy_is_the_trainers_test_accuracy(run):
    loaded, ev = run
    cfg = RunConfig(**{k: v for k, v in loaded.config.items()})
    _, acc = engine.Trainer(cfg, loaded.checkpoint.parent).evaluate(loaded.model, data.run_split(loaded.config, "test"))
    assert ev.accuracy == pytest.approx(acc) and np.trace(ev.confusion()) / len(ev) == pytest.approx(acc)


def test_per_class_metrics_match_scikit_learn(run):
    from sklearn.metrics import precision_recall_fscore_support

    loaded, ev = run
    rows = evaluate.per_class_metrics(ev.confusion(), ev.class_names)
    p, r, f, s = precision_recall_fscore_support(ev.y, ev.predicted, labels=range(len(ev.class_names)), zero_division=0)
    assert [row["class"] for row in rows] == loaded.class_names
    assert np.allclose([row["precision"] for row in rows], p) and np.allclose([row["recall"] for row in rows], r)
    assert np.allclose([row["f1"] for row in rows], f) and [row["support"] for row in rows] == s.tolist()


def test_cells_hold_their_images_and_top_losses_are_the_worst_mistakes(run):
    loaded, ev = run
    logits, _ = _direct_predictions(loaded, data.run_split(loaded.config, "test"))
    ce = F.cross_entropy(logits, torch.as_tensor(ev.y), reduction="none").numpy()
    assert np.allclose(ev.losses, ce, atol=1e-4)
    cm = ev.confusion()
    for t in range(len(ev.class_names)):
        for p in range(len(ev.class_names)):
            idx = ev.cell(t, p)
            assert len(idx) == cm[t, p] and all(ev.y[i] == t and ev.predicted[i] == p for i in idx)
            assert list(ev.probs[idx, p]) == sorted(ev.probs[idx, p], reverse=True)
    top = ev.top_losses(5)
    wrong = np.nonzero(ev.predicted != ev.y)[0]
    assert len(top) == min(5, len(wrong)) and all(ev.predicted[i] != ev.y[i] for i in top)
    assert list(ev.losses[top]) == sorted(ev.losses[wrong], reverse=True)[: len(top)]
    assert ev.x[top].shape[1:] == (3 if loaded.config["dataset"].startswith("folder:") else 1, 32, 32)


def test_a_class_never_predicted_has_zero_precision_not_nan():
    cm = evaluate.confusion_matrix([0, 0, 1, 2], [0, 0, 0, 0], 3)
    assert cm.tolist() == [[2, 0, 0], [1, 0, 0], [1, 0, 0]]
    rows = evaluate.per_class_metrics(cm, ["a", "b", "c"])
    assert rows[1] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rows[0]["precision"] == pytest.approx(0.5) and rows[0]["f1"] == pytest.approx(2 / 3)
    assert np.array_equal(evaluate.normalise_rows(np.zeros((2, 2), dtype=int)), np.zeros((2, 2)))
