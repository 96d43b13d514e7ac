"""The training loop, for real: tiny images, few epochs, CPU."""

from __future__ import annotations

import pytest
import torch

from core.errors import ConfigError
from core.train import backbones, engine, events
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def run(tmp_path, listeners=(), **kw):
    cfg = RunConfig(**{"device": "cpu", "image_size": 32, **kw})
    return engine.train(cfg, run_dir=tmp_path / "run", listeners=listeners)


@pytest.mark.slow
def test_feature_extraction_learns_digits_from_the_feature_cache(tmp_path):
    rec = Recorder()
    # The backbone's pass over each image is the cost; epochs of the head on the cached features are nearly free.
    result = run(tmp_path, (rec,), backbone="efficientnet_lite0", strategy="feature_extraction", epochs=10, image_size=32,
                 labels_per_class=50)
    assert result.status == "finished"
    assert result.feature_cache
    assert result.test_accuracy > 0.7  # chance is 0.1; 0.78-0.89 over seeds 0-5 at 32 px, 50 per class, 10 epochs
    assert any("feature cache" in n.message for n in rec.of(events.Note))
    assert result.trainable_params == 1280 * 10 + 10  # the head alone


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_event_stream_tells_the_story_of_a_run(tmp_path):
    rec = Recorder()
    result = run(tmp_path, (rec,), backbone="small_cnn", strategy="scratch", epochs=2, image_size=16, batch_size=64)
    kinds = [type(e).__name__ for e in rec.events]
    assert kinds[0] == "RunStart" and kinds[-1] == "RunEnd"
    start = rec.events[0]
    assert start.sizes["train"] + start.sizes["val"] + start.sizes["test"] == 1797
    steps = rec.of(events.Step)
    assert [s.step for s in steps] == list(range(1, 2 * start.steps_per_epoch + 1))
    assert all(s.loss > 0 and s.images_per_second > 0 and s.lr > 0 for s in steps)
    epochs = rec.of(events.EpochEnd)
    assert [e.epoch for e in epochs] == [1, 2]
    assert epochs[1].train_loss < steps[0].loss  # it learned something
    stats = rec.of(events.LayerStats)
    assert [s.epoch for s in stats] == [1, 2]
    assert {r["group"] for r in stats[0].rows} == set(backbones.get("small_cnn").group_names)
    end = rec.of(events.RunEnd)[0]
    assert end.status == "finished" and end.result is result
    assert result.test_accuracy > 0.3


def test_layer_stats_show_frozen_groups_untouched(tmp_path):
    rec = Recorder()
    # What moved is the claim, not how well: 5 labels per class, 16 px, ~90 validation and test images.
    run(tmp_path, (rec,), backbone="efficientnet_lite0", strategy="partial", freeze_stages=3, epochs=1, image_size=16,
        labels_per_class=5, val_fraction=0.05, test_fraction=0.05)
    rows = {r["group"]: r for r in rec.of(events.LayerStats)[0].rows}
    for g in ("stem", "stage1", "stage2", "stage3"):
        assert rows[g]["frozen"] and rows[g]["weight_change"] == 0.0 and rows[g]["grad_norm"] == 0.0
    for g in ("stage7", "head"):
        assert not rows[g]["frozen"] and rows[g]["weight_change"] > 0 and rows[g]["grad_norm"] > 0


def test_gradual_unfreezing_changes_the_plan_and_keeps_the_stem_pretrained(tmp_path):
    rec = Recorder()
    result = run(tmp_path, (rec,), backbone="efficientnet_lite0", strategy="gradual", epochs=3, image_size=16,
                 labels_per_class=3, val_fraction=0.05, test_fraction=0.05)
    changes = rec.of(events.PlanChange)
    assert [c.epoch for c in changes] == [2, 3]
    assert changes[0].plan.trainable_params < changes[1].plan.trainable_params
    # The stem never unfroze in 3 epochs: bit-identical to the bundled weights.
    spec = backbones.get("efficientnet_lite0")
    fresh = backbones.create_model(spec, 10, 16, pretrained=True)
    trained = torch.load(result.checkpoint, weights_only=True)["model"]
    assert torch.equal(trained["conv_stem.weight"], fresh.state_dict()["conv_stem.weight"])
    assert torch.equal(trained["bn1.running_mean"], fresh.state_dict()["bn1.running_mean"])
    assert not torch.equal(trained["classifier.weight"], fresh.state_dict()["classifier.weight"])


def test_checkpoint_reloads_into_a_model_with_the_same_accuracy(tmp_path):
    result = run(tmp_path, backbone="small_cnn", strategy="scratch", epochs=1, image_size=16)
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["class_names"] == [str(i) for i in range(10)]
    assert ckpt["config"]["backbone"] == "small_cnn" and "optimizer" in ckpt
    spec = backbones.get("small_cnn")
    model = backbones.build(spec, 10, 16)
    model.load_state_dict(ckpt["model"])
    trainer = engine.Trainer(RunConfig(backbone="small_cnn", strategy="scratch", image_size=16, device="cpu"),
                             tmp_path / "other")
    from core.train import data

    bundle = data.load("digits", 16, 0)
    _, acc = trainer.evaluate(model, bundle.test)
    assert acc == pytest.approx(result.test_accuracy)


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_same_seed_same_run_on_cpu(tmp_path):
    losses = []
    for i in range(2):
        rec = Recorder()
        engine.train(RunConfig(backbone="small_cnn", strategy="scratch", epochs=1, image_size=16, device="cpu",
                               augment=True, seed=3, labels_per_class=20), run_dir=tmp_path / f"r{i}", listeners=(rec,))
        losses.append([s.loss for s in rec.of(events.Step)])
    assert losses[0] == losses[1]


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_cancel_stops_at_the_next_step_and_keeps_the_last_checkpoint(tmp_path):
    rec = Recorder()
    calls = {"n": 0}
    cfg = RunConfig(backbone="small_cnn", strategy="scratch", epochs=3, image_size=16, device="cpu", batch_size=64)

    def should_stop():
        calls["n"] += 1
        return len(rec.of(events.EpochEnd)) >= 1 and len(rec.of(events.Step)) >= rec.events[0].steps_per_epoch + 2

    result = engine.train(cfg, run_dir=tmp_path / "run", listeners=(rec,), should_stop=should_stop)
    assert result.status == "cancelled"
    assert len(rec.of(events.Step)) == rec.events[0].steps_per_epoch + 2
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert result.test_accuracy is None


def test_nan_loss_stops_the_run_with_a_reason(tmp_path):
    spec = backbones.get("small_cnn")
    state = backbones.build(spec, 10, 16).state_dict()
    state["stem.0.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    result = run(tmp_path, backbone="small_cnn", strategy="full", epochs=2, image_size=16, weights=str(path))
    assert result.status == "failed"
    assert "loss became nan" in result.reason and "learning rate" in result.reason
    assert result.test_accuracy is None


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        run(tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="learning rate"):
        run(tmp_path, lr=-1.0)
    with pytest.raises(ConfigError, match="scratch"):
        run(tmp_path, backbone="small_cnn", strategy="full")
    with pytest.raises(ConfigError, match="cuda"):
        run(tmp_path, device="cuda") if not torch.cuda.is_available() else (_ for _ in ()).throw(ConfigError("cuda"))
    assert not (tmp_path / "run").exists()
