"""The training recipe, for real: best weights, early stopping, augmentation,
calibration, class imbalance (tiny images, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import image_folder
from core.errors import ConfigError
from core.train import calibration, checkpoint, data, engine, events
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(list):
    def __call__(self, event):
        self.append(event)

    def of(self, kind):
        return [e for e in self if isinstance(e, kind)]


def test_early_stopping_ends_a_run_whose_validation_loss_rises_and_scores_the_best_epoch(tmp_path):
    # Random-noise images with random labels: the model can only memorise them, so the
    # validation loss falls for a few epochs at most, then climbs.
    ds = image_folder(tmp_path / "noise", {"a": 60, "b": 60})
    rec = Recorder()
    cfg = RunConfig(backbone="mlp", strategy="scratch", dataset=ds, epochs=12, image_size=16, batch_size=16, lr=0.01,
                    device="cpu", val_fraction=0.25, test_fraction=0.25, patience=2)
    result = engine.train(cfg, run_dir=tmp_path / "run", listeners=(rec,))
    epochs = rec.of(events.EpochEnd)
    val = {e.epoch: e.val_loss for e in epochs}
    best = min(val, key=val.get)
    last = epochs[-1].epoch
    assert result.status == "finished" and last < 12
    assert result.reason == result.stop_reason == f"stopped early at epoch {last} (best {best})"
    assert last == best + 2 and val[last] > val[best]
    assert result.best_epoch == result.scored_epoch == best
    # The best checkpoint is the best validation epoch's; the last one is where resume continues.
    run_dir = tmp_path / "run"
    assert torch.load(run_dir / "best.pt", weights_only=True)["epoch"] == best
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == last
    # The test split was scored with the best weights, and Predict/Inspect load them by default.
    loaded = checkpoint.load_run_model(run_dir)
    assert loaded.epoch == best and loaded.which == "best"
    assert checkpoint.load_run_model(run_dir, "last").epoch == last
    trainer = engine.Trainer(cfg, tmp_path / "other")
    bundle = data.load(ds, 16, 0, None, 0.25, 0.25)
    assert trainer.evaluate(loaded.model, bundle.test)[1] == pytest.approx(result.test_accuracy)
    assert result.ece is not None and result.ece_calibrated is not None and result.temperature > 0
    assert json.loads((run_dir / "calibration.json").read_text())["epoch"] == best


def test_use_weights_last_scores_the_last_epoch(tmp_path):
    ds = image_folder(tmp_path / "noise", {"a": 30, "b": 30})
    cfg = RunConfig(backbone="mlp", strategy="scratch", dataset=ds, epochs=4, image_size=16, batch_size=16, lr=0.01,
                    device="cpu", val_fraction=0.25, test_fraction=0.25, use_weights="last")
    result = engine.train(cfg, run_dir=tmp_path / "run")
    assert result.scored_epoch == 4 and result.stop_reason == "completed all 4 epoch(s)"
    assert checkpoint.load_run_model(tmp_path / "run").epoch == 4  # the run's own choice


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    # A classifier right about 70% of the time whose logits are five times too large:
    # it says 99% where it should say 70%.
    g = torch.Generator().manual_seed(0)
    n, k = 4000, 5
    y = torch.randint(k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), y] += 1.6
    logits *= 5
    val, test = slice(0, n // 2), slice(n // 2, n)
    cal = calibration.calibrate(logits[val], y[val], logits[test], y[test])
    assert cal["temperature"] > 3
    assert cal["ece"] > 0.2 and cal["ece_calibrated"] < 0.03
    after = [r for r in cal["reliability"]["after"] if r["count"] > 100]
    assert all(abs(r["accuracy"] - r["confidence"]) < 0.08 for r in after)
    assert torch.equal(torch.softmax(logits / cal["temperature"], 1).argmax(1), logits.argmax(1))  # same answers


def test_augmentation_draws_per_image_from_a_seed():
    x = data.to_unit(data.load_raw("digits", 32).x[:16])
    strong = data.policy_of(RunConfig(augment="strong"))
    a1, a2, a3 = (data.augment(x, strong, s) for s in (7, 7, 8))
    assert a1.shape == x.shape and torch.equal(a1, a2) and not torch.allclose(a1, a3)
    assert (a1 - x).abs().flatten(1).amax(1).gt(0.1).all()  # every image changed
    assert 0 <= float(a1.min()) and float(a1.max()) <= 1
    # Per image, not per batch: the same image sixteen times comes out sixteen ways.
    same = x[:1].expand(16, -1, -1, -1).contiguous()
    out = data.augment(same, data.policy_of(RunConfig(augment="light")), 0)
    assert len({round(float(v), 4) for v in out.flatten(1).mean(1)}) == 16
    assert data.policy_of(RunConfig()) is None
    assert data.policy_of(RunConfig(augment="light", crop_scale=0.9, flip=False)).crop_scale == 0.9


def test_flip_knob_flips_about_half_the_images():
    x = torch.zeros(200, 3, 16, 16)
    x[..., 8:] = 1.0  # dark left half, bright right half
    policy = data.Policy(crop_scale=1.0, flip=True, auto_augment="off", color_jitter=0.0)
    out = data.Augmenter(policy, 16)(x, 0)[0]
    flipped = (out[..., :8].mean(dim=(1, 2, 3)) > out[..., 8:].mean(dim=(1, 2, 3))).float().mean()
    assert 0.3 < flipped < 0.7


def test_mixup_mixes_labels_the_way_it_mixes_images():
    x = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)]).repeat(4, 1, 1, 1)
    y = torch.tensor([0, 1]).repeat(4)
    policy = data.Policy(crop_scale=1.0, flip=False, auto_augment="off", color_jitter=0.0, mixup=1.0)
    out, (ya, yb, w) = data.Augmenter(policy, 8)(x, 3, y)
    # An image's brightness is the share of the "ones" image in it: the loss weighs label 1 the same.
    share_of_ones = (ya == 1).float() * (1 - w) + (yb == 1).float() * w
    assert torch.allclose(out.mean(dim=(1, 2, 3)), share_of_ones, atol=1e-5)


def test_old_configs_still_load_and_recipe_settings_are_checked():
    old = json.loads(RunConfig().to_json())
    for k in ("patience", "monitor", "use_weights", "label_smoothing", "class_weights", "sampler", "crop_scale"):
        old.pop(k)
    old["augment"] = True  # stored before augmentation had levels
    cfg = RunConfig.from_dict(old)
    assert cfg.augment == "light" and cfg.use_weights == "best" and cfg.patience is None
    from core.train.config import check_ranges

    for bad, words in [(dict(patience=0), "patience"), (dict(augment="wild"), "augment"),
                       (dict(label_smoothing=0.9), "label smoothing"), (dict(monitor="loss"), "monitor")]:
        with pytest.raises(ConfigError, match=words):
            check_ranges(RunConfig(**bad))


@pytest.mark.slow
def test_class_weights_auto_raise_the_minority_class_recall(tmp_path):
    from core.insight import evaluate

    # 300 against 30, the classes barely apart: unweighted, the model predicts the big class.
    ds = image_folder(tmp_path / "imbalanced", {"big": 300, "small": 30}, size=8, signal=0.02)
    recall = {"none": [], "auto": []}
    for seed in range(3):
        for weights in recall:
            cfg = RunConfig(backbone="mlp", strategy="scratch", dataset=ds, epochs=2, image_size=16, batch_size=32,
                            device="cpu", class_weights=weights, seed=seed, val_fraction=0.2, test_fraction=0.3)
            engine.train(cfg, run_dir=tmp_path / f"{weights}{seed}")
            ev = evaluate.evaluate_run(tmp_path / f"{weights}{seed}")
            recall[weights].append(evaluate.per_class_metrics(ev.confusion(), ev.class_names)[1]["recall"])
    # Seeds 0-2: none 0, 0, 0; auto 0.44, 0.56, 0.89 (9 small-class test images each).
    assert all(a > n for a, n in zip(recall["auto"], recall["none"]))
    assert sum(recall["auto"]) / 3 - sum(recall["none"]) / 3 > 0.3


def test_train_val_test_folders_are_used_as_given(tmp_path):
    from core.service import forms

    root = tmp_path / "given"
    for split, n in (("train", 12), ("valid", 4), ("test", 5)):
        image_folder(root / split, {"cat": n, "dog": n}, size=8, seed=len(split))
    bundle = data.load(f"folder:{root}", 16, seed=3)
    assert bundle.class_names == ["cat", "dog"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 8, 10)
    assert bundle.class_counts() == {"cat": 12, "dog": 12}
    view = forms.preview_folder(f"folder:{root}", classes=0)
    assert view.layout.startswith("train/, val/ and test/ folders, used as given") and "8 val" in view.layout
    # Without a test folder, the test split is cut from train (stratified, by the seed).
    (root / "test").rename(tmp_path / "elsewhere")
    bundle = data.load(f"folder:{root}", 16, seed=3, test_fraction=0.25)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18, 8, 6)


@pytest.mark.slow
def test_resume_after_a_thaw_continues_step_for_step_like_an_uninterrupted_run(tmp_path):
    from core.train import backbones

    # Gradual unfreezing from a weights file (small_cnn has no pretrained ones), augmented, with patience:
    # the run is stopped in epoch 3, after two thaws, and resumed from its epoch-2 checkpoint.
    weights = tmp_path / "start.pt"
    torch.manual_seed(1)
    torch.save(backbones.build(backbones.get("small_cnn"), 10, 16).state_dict(), weights)
    cfg = RunConfig(backbone="small_cnn", strategy="gradual", weights=str(weights), unfreeze_every=1, epochs=4,
                    image_size=16, batch_size=32, labels_per_class=10, device="cpu", augment="light", patience=3,
                    monitor="val_accuracy")
    whole = Recorder()
    engine.train(cfg, run_dir=tmp_path / "whole", listeners=(whole,))
    spe = whole[0].steps_per_epoch
    first = Recorder()
    stopped = engine.train(cfg, run_dir=tmp_path / "cut", listeners=(first,),
                           should_stop=lambda: len(first.of(events.Step)) >= 2 * spe + 1)
    assert stopped.status == "cancelled" and len(first.of(events.Step)) == 2 * spe + 1
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    resumed = Recorder()
    engine.Trainer(cfg, tmp_path / "cut", "resumed", (resumed,)).run(resume_from=tmp_path / "cut" / "checkpoint.pt")

    def steps(rec, since):
        return [(s.step, s.loss, s.lr) for s in rec.of(events.Step) if s.step > since]

    assert steps(resumed, 2 * spe) == steps(whole, 2 * spe)  # the same losses and LRs, step for step

    def layers(rec, since):
        return [[(r["group"], r["frozen"], r["lr"]) for r in s.rows] for s in rec.of(events.LayerStats) if s.epoch > since]

    assert layers(resumed, 2) == layers(whole, 2)  # the same groups trainable, at the same LRs
    a, b = whole.of(events.RunEnd)[0].result, resumed.of(events.RunEnd)[0].result
    assert (a.best_epoch, a.stop_reason, a.test_accuracy) == (b.best_epoch, b.stop_reason, b.test_accuracy)


def test_predict_calibrated_and_tta_probabilities():
    from core.insight import predict
    from core.train import backbones
    from core.train.checkpoint import LoadedModel

    spec = backbones.get("small_cnn")
    torch.manual_seed(0)
    model = backbones.build(spec, 10, 16).eval()
    loaded = LoadedModel(model, spec, [str(i) for i in range(10)], 16, temperature=2.5)
    x = data.load_raw("digits", 16).x[:6]
    with torch.no_grad():
        logits = model(data.batch_input(x, spec.mean, spec.std))
        flipped = model(data.batch_input(x.flip(-1), spec.mean, spec.std))
    raw = predict.probabilities(loaded, x)
    assert torch.allclose(raw, torch.softmax(logits, 1), atol=1e-6)
    assert torch.allclose(predict.probabilities(loaded, x, calibrated=True), torch.softmax(logits / 2.5, 1), atol=1e-6)
    tta = predict.probabilities(loaded, x, tta=True)
    assert torch.allclose(tta, (torch.softmax(logits, 1) + torch.softmax(flipped, 1)) / 2, atol=1e-6)
    assert predict.calibrated(loaded) and not predict.calibrated(LoadedModel(model, spec, loaded.class_names, 16))


def test_patience_counts_epochs_without_improvement_and_a_thaw_starts_it_again():
    from core.train.recipe import Watch

    w = Watch("val_loss", patience=2, min_delta=0.01)
    assert w.update(1, 1.0, 0.5) and w.best_epoch == 1
    assert not w.update(2, 0.995, 0.6)  # better by less than min_delta: no improvement
    w.thawed()  # gradual unfreezing thawed a group: its epochs count afresh
    assert not w.update(3, 1.2, 0.4) and not w.should_stop
    assert not w.update(4, 1.3, 0.4) and w.should_stop
    assert w.stop_reason(4) == "stopped early at epoch 4 (best 1)"
    acc = Watch("val_accuracy", patience=1)
    assert acc.update(1, 9.0, 0.5) and acc.update(2, 9.9, 0.6) and not acc.update(3, 0.1, 0.6) and acc.should_stop


@pytest.mark.parametrize("seed", range(4))
def test_balanced_accuracy_and_confusion_matrix_are_scikit_learns(seed):
    """The run's two metrics, computed with a bincount to keep scikit-learn out of every run process, give
    scikit-learn's figures: random labels, a class never predicted, a class predicted but absent, one class."""
    from sklearn import metrics

    rng = np.random.default_rng(seed)
    k = 7
    y = rng.integers(0, k, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
    pred[pred == 3] = 4  # class 3 never predicted
    y[y == 6] = 5  # class 6 predicted but never true
    for t, p in ((y, pred), (y[:1], pred[:1]), (np.zeros(5, int), np.array([0, 0, 1, 1, 6]))):
        assert calibration.balanced_accuracy(torch.from_numpy(p), torch.from_numpy(t)) == pytest.approx(
            metrics.balanced_accuracy_score(t, p), abs=1e-12)
        np.testing.assert_array_equal(calibration.confusion_matrix(t, p, k),
                                      metrics.confusion_matrix(t, p, labels=np.arange(k)))
    assert calibration.balanced_accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)) == 0.0
    assert calibration.confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3
