"""Exports of real (tiny) trained runs round-trip: ONNX through onnxruntime
and TorchScript through torch.jit give the PyTorch model's logits within
1e-4 and the same top-1 on the whole test split; the pt ZIP rebuilds it."""

from __future__ import annotations

import io
import json
import zipfile

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.insight import export
from core.train import backbones, data
from core.train.checkpoint import load_run_model


@pytest.fixture(scope="module")
def digits(tiny_runs):
    loaded = load_run_model(tiny_runs.digits)
    test = data.run_split(loaded.config, "test")
    with torch.inference_mode():
        ref = loaded.model(data.batch_input(test.x, loaded.spec.mean, loaded.spec.std)).numpy()
    return loaded, test, ref


@pytest.mark.slow  # the ONNX exporter and onnxruntime: 10-15 s
def test_onnx_round_trips_through_onnxruntime(digits, isolated_home, monkeypatch):
    import tempfile

    import onnxruntime as ort

    loaded, test, ref = digits
    made, mkdtemp = [], tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(mkdtemp(*a, **k)) or made[-1])
    path = export.export(loaded, "onnx", isolated_home / "sub" / "model.onnx")
    assert made and all(Path(d).resolve().is_relative_to(isolated_home.resolve()) for d in made)  # no system temp
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # nothing left beside the export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"] and [o.name for o in session.get_outputs()] == ["logits"]
    images = (test.x.float() / 255).expand(-1, 3, -1, -1).numpy()  # RGB in [0, 1]: normalisation is inside
    got = np.concatenate([session.run(None, {"images": images[i : i + 100]})[0] for i in range(0, len(images), 100)])
    assert got.shape == ref.shape == (len(test), 10)
    assert np.abs(got - ref).max() <= 1e-4
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    v = export.verify(path, "onnx", loaded, test.x)
    assert v.ok and v.images == len(test) and v.top1_agreement == 1.0


def test_torchscript_round_trips_without_the_python_class(digits, isolated_home):
    loaded, test, ref = digits
    path = export.export(loaded, "torchscript", isolated_home / "model.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))
    with torch.no_grad():
        got = module(data.to_unit(test.x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 and np.array_equal(got.argmax(1), ref.argmax(1))


def test_pt_zip_rebuilds_the_model_of_a_zip_run(tiny_runs, isolated_home):
    loaded = load_run_model(tiny_runs.shapes)
    path = export.export(loaded, "pt", isolated_home / "run.zip")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["class_names.json", "config.json", "model.pt"]
        card = json.loads(zf.read("config.json"))
        state = torch.load(io.BytesIO(zf.read("model.pt")), weights_only=True)
        assert json.loads(zf.read("class_names.json")) == ["bar", "disc", "square"]
    assert card["backbone"] == "small_cnn" and card["image_size"] == 32 and card["class_names"] == ["bar", "disc", "square"]
    assert card["config"]["dataset"].startswith("folder:")
    model = backbones.build(backbones.get(card["backbone"]), len(card["class_names"]), card["image_size"]).eval()
    model.load_state_dict(state)
    x = data.run_split(loaded.config, "test").x
    with torch.inference_mode():
        normalised = (data.to_unit(x) - torch.tensor(card["mean"]).view(1, 3, 1, 1)) / torch.tensor(card["std"]).view(1, 3, 1, 1)
        assert torch.equal(model(normalised), loaded.model(data.batch_input(x, loaded.spec.mean, loaded.spec.std)))


def test_export_refuses_bad_targets(digits, isolated_home, tmp_path):
    loaded, _, _ = digits
    with pytest.raises(export.ExportError, match="Unknown export format 'tflite'"):
        export.export(loaded, "tflite", isolated_home / "m")
    isolated_home.mkdir(parents=True, exist_ok=True)
    with pytest.raises(export.ExportError, match="is a folder: give a file name"):
        export.export(loaded, "pt", isolated_home)
    with pytest.raises(ConfigError, match="outside the data folder"):
        export.export(loaded, "pt", tmp_path / "elsewhere.zip")
    assert not (tmp_path / "elsewhere.zip").exists()


def test_a_check_passes_only_with_the_same_top1_and_logits_within_float32_noise():
    assert export.Verification(10, 5e-5, 1.0, 1e-6).ok
    assert export.Verification(10, 1.6e-4, 1.0, 1.25e-4).ok  # a deep net's logits: float32 alone errs that much
    assert not export.Verification(10, 3e-4, 1.0, 1e-4).ok
    assert not export.Verification(10, 0.0, 0.99, 0.0).ok
    assert "NOT within" in export.Verification(10, 3e-4, 1.0, 1e-4).describe()
