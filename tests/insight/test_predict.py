"""Predictions from a real (tiny) trained run on real digit images saved as PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import DataError, TLabError
from core.insight import predict
from core.train import data, engine
from core.train.checkpoint import CheckpointError, load_run_model
from core.train.config import RunConfig

N_IMAGES = 20


# One xdist worker runs this module: its module-scoped training then happens once, not once per worker.
pytestmark = pytest.mark.xdist_group("predict")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """small_cnn from scratch on digits at 16 px, 2 epochs: a few seconds."""
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLAB_HOME", str(root / "tlab"))
        cfg = RunConfig(backbone="small_cnn", strategy="scratch", epochs=2, image_size=16, device="cpu")
        result = engine.train(cfg, run_dir=root / "run")
    assert result.status == "finished"
    return root / "run", cfg, result


@pytest.fixture(scope="module")
def digit_pngs():
    """(PNG bytes, label) for held-out digits: the run's own test split,
    8x8 greys scaled to 0-255; every other one upscaled 4x first."""
    from sklearn.datasets import load_digits

    d = load_digits()
    _, test_idx, _ = data.stratified_split(torch.from_numpy(d.target), (0.15, 0.15), seed=0)  # as data.load splits
    out = []
    for n, i in enumerate(test_idx[:N_IMAGES].tolist()):
        im = Image.fromarray(np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8), mode="L")
        if n % 2:
            im = im.resize((32, 32), Image.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append((buf.getvalue(), str(d.target[i])))
    return out


@pytest.fixture(scope="module")
def loaded(trained):
    return load_run_model(trained[0])


def test_loaded_model_matches_the_run(loaded, trained):
    run_dir, cfg, result = trained
    assert loaded.class_names == [str(i) for i in range(10)]
    assert loaded.image_size == 16 and loaded.spec.name == "small_cnn"
    assert loaded.config["strategy"] == "scratch" and loaded.epoch == 2
    assert not loaded.model.training and all(not m.training for m in loaded.model.modules())
    assert next(loaded.model.parameters()).device.type == "cpu"
    assert loaded.checkpoint == run_dir / "best.pt"  # the best validation epoch's weights, by default
    assert loaded.which == "best" and loaded.epoch == result.best_epoch
    same = load_run_model(result.checkpoint)  # the file itself works too
    for a, b in zip(same.model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)


def test_predicts_held_out_digits_from_png(loaded, digit_pngs):
    correct = 0
    for png, label in digit_pngs:
        preds = predict.predict(loaded, png, k=5)
        assert len(preds) == 5
        probs = [p for _, p in preds]
        assert probs == sorted(probs, reverse=True)
        assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-5
        assert len({c for c, _ in preds}) == 5 and all(c in loaded.class_names for c, _ in preds)
        correct += preds[0][0] == label
    assert correct >= 0.7 * len(digit_pngs), f"{correct}/{len(digit_pngs)} right (chance is 10%)"


def test_single_image_prediction_agrees_with_the_trainers_batch_inference(loaded, trained, digit_pngs):
    run_dir, cfg, _ = trained
    x = torch.from_numpy(np.stack([data.decode_image(png, loaded.image_size) for png, _ in digit_pngs]))
    y = torch.tensor([int(label) for _, label in digit_pngs])
    trainer = engine.Trainer(cfg, run_dir)
    with torch.inference_mode():
        batch_top1 = loaded.model(trainer._prep(x)).argmax(1).tolist()
    single = [predict.predict(loaded, png, k=1) for png, _ in digit_pngs]
    assert [loaded.class_names.index(p[0][0]) for p in single] == batch_top1
    _, accuracy = trainer.evaluate(loaded.model, data.Split(x, y))
    assert accuracy == pytest.approx(sum(p[0][0] == label for p, (_, label) in zip(single, digit_pngs)) / len(y))


def test_k_is_capped_and_paths_and_uploads_work(loaded, digit_pngs, tmp_path):
    png, _ = digit_pngs[0]
    everything = predict.predict(loaded, png, k=50)
    assert len(everything) == 10 and sum(p for _, p in everything) == pytest.approx(1.0, abs=1e-5)
    path = tmp_path / "digit.png"
    path.write_bytes(png)
    assert predict.predict(loaded, path, k=3) == predict.predict(loaded, png, k=3) == everything[:3]
    assert predict.predict(loaded, io.BytesIO(png), k=3) == everything[:3]  # an uploaded file object


@pytest.mark.parametrize("bad", [b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""])
def test_unreadable_image_is_a_clear_data_error(loaded, bad):
    with pytest.raises(DataError, match=r"could not read the image: .*PNG, JPEG, WebP or BMP"):
        predict.predict(loaded, bad)


def test_missing_image_file_is_a_data_error(loaded, tmp_path):
    with pytest.raises(DataError, match="could not read the image"):
        predict.predict(loaded, tmp_path / "nope.png")


def test_missing_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="has no checkpoint.pt yet"):
        load_run_model(tmp_path / "run")
    with pytest.raises(TLabError, match="No checkpoint at .*gone"):
        load_run_model(tmp_path / "gone")


def test_corrupt_checkpoint_says_what_to_do(tmp_path, trained):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_run_model(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((trained[0] / "checkpoint.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_run_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="no model weights"):
        load_run_model(foreign)


def test_truncated_png_is_a_data_error(loaded, digit_pngs):
    with pytest.raises(DataError, match="could not read the image"):
        predict.predict(loaded, digit_pngs[1][0][:60])


def test_photos_of_any_size_and_mode_are_preprocessed_like_training(loaded):
    rng = np.random.default_rng(0)
    for mode, size, fmt in (("RGBA", (50, 30), "PNG"), ("RGB", (41, 67), "JPEG"), ("P", (20, 20), "BMP")):
        im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        preds = predict.predict(loaded, buf.getvalue(), k=10)
        assert len(preds) == 10 and sum(p for _, p in preds) == pytest.approx(1.0, abs=1e-5)
