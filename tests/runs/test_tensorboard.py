"""A real run writes TensorBoard event files that TensorBoard's own reader
gives back equal to the run store: the step losses and LRs, the epoch metrics,
each layer group's weight change and gradient norm, the hyperparameters with
the final metrics, and the confusion matrix as an image. The run's folder has
its settings as config.toml."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from core.runs import jobs, tensorboard
from core.runs.store import Store
from core.train import runfile
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow  # a real two-epoch run, then TensorBoard's reader: ~10 s
def test_event_files_read_back_equal_the_store(isolated_home):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = RunConfig(backbone="mlp", strategy="scratch", image_size=16, epochs=2, device="cpu", labels_per_class=5)
    row = jobs.run_foreground(cfg)
    assert row["status"] == "finished"
    run_id, store = row["id"], Store()
    assert RunConfig.from_dict(runfile.loads((isolated_home / run_id / "config.toml").read_text()).runs[0]) == cfg

    logdir = tensorboard.log_dir(run_id)
    assert logdir.parent == isolated_home / "tensorboard"
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    scalars = lambda tag: [(e.step, e.value) for e in ea.Scalars(tag)]  # noqa: E731

    steps = store.query("SELECT step, loss, lr FROM step_metrics WHERE run_id=? ORDER BY step", (run_id,))
    assert [s for s, _ in scalars("train/loss")] == [r["step"] for r in steps] and len(steps) >= 2
    np.testing.assert_allclose([v for _, v in scalars("train/loss")], [r["loss"] for r in steps], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in scalars("train/lr")], [r["lr"] for r in steps], rtol=1e-6)

    epochs = store.metrics([run_id])
    for tag, col in (("epoch/train_loss", "train_loss"), ("epoch/val_accuracy", "val_accuracy"),
                     ("epoch/train_accuracy", "train_accuracy"), ("epoch/val_loss", "val_loss")):
        assert [s for s, _ in scalars(tag)] == epochs["epoch"].tolist() == [1, 2]
        np.testing.assert_allclose([v for _, v in scalars(tag)], epochs[col].to_numpy(), rtol=1e-6)

    layers = store.layer_stats(run_id)
    for r in layers.to_dict("records"):
        for what in ("weight_change", "grad_norm"):
            (value,) = [v for s, v in scalars(f"layers/{what}/{r['group']}") if s == r["epoch"]]
            assert value == pytest.approx(r[what], rel=1e-6, abs=1e-12)

    assert scalars("final/test_accuracy")[0][1] == pytest.approx(row["test_accuracy"], rel=1e-6)
    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["backbone"].string_value == "mlp" and hp["epochs"].number_value == 2 and hp["lr"].string_value == "none"

    (image,) = ea.Images("test/confusion_matrix")
    with Image.open(io.BytesIO(image.encoded_image_string)) as im:
        assert im.size == (10 * 12, 10 * 12)  # ten digit classes, one 12 px cell each
    cm = np.array(json.loads(row["result"])["confusion"])  # the matrix drawn is the run's own, as scored
    assert cm.shape == (10, 10) and np.trace(cm) / cm.sum() == pytest.approx(row["test_accuracy"], abs=1e-9)


def test_tensorboard_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv(tensorboard.ENV, "0")
    assert tensorboard.listeners("r1") == ()
    monkeypatch.setenv(tensorboard.ENV, "1")
    assert len(tensorboard.listeners("r1")) == 1


def test_confusion_image_is_darker_where_more_images_fall():
    img = confusion_image = tensorboard.confusion_image(np.array([[9, 1], [0, 5]]), cell=4)
    assert confusion_image.shape == (8, 8, 3)
    assert img[2, 2].sum() < img[2, 6].sum() and img[6, 6].sum() < img[6, 2].sum()
