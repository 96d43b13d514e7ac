"""Export bundles: the model file, safetensors weights, signature.json and a
README model card; the card's onnxruntime lines, run where no project code can
be imported, give the app's own prediction."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from core.cli.main import main as cli_main
from core.insight import bundle, predict
from core.train.checkpoint import load_run_model


def _image(tiny_runs, tmp_path):
    """One of the shapes dataset's own colour images, as a file."""
    with zipfile.ZipFile(tiny_runs.zip) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".png"))
        (tmp_path / "image.png").write_bytes(zf.read(name))
    return tmp_path / "image.png"


@pytest.mark.slow  # the ONNX exporter and a fresh interpreter with onnxruntime: ~15 s
def test_onnx_bundle_runs_with_onnxruntime_numpy_and_pillow_only(tiny_runs, isolated_home, tmp_path, capsys):
    out = isolated_home / "exports" / "shapes-onnx.zip"
    assert cli_main(["export", "--run", str(tiny_runs.shapes), "--format", "onnx", "--out", str(out), "--verify", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] and info["top1_agreement"] == 1.0  # the ONNX model inside the bundle, checked on the test split
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["README.md", "model.onnx", "model.safetensors", "signature.json"]
        zf.extractall(tmp_path / "bundle")
    loaded = load_run_model(tiny_runs.shapes)
    sig = json.loads((tmp_path / "bundle" / "signature.json").read_text())
    assert sig["class_names"] == list(loaded.class_names)
    assert sig["input"]["size"] == 32 and sig["input"]["colour_order"] == "RGB" and sig["input"]["value_range"] == [0, 1]
    assert sig["input"]["mean"] == list(loaded.spec.mean) and sig["output"]["kind"] == "logits"
    card = (tmp_path / "bundle" / "README.md").read_text()
    for needle in ("Small CNN" if "Small" in loaded.spec.title else loaded.spec.title, "Pretraining: none", "Strategy: scratch",
                   "Splits: train", "Test accuracy:", "| class | precision | recall | F1 |", "Calibration:"):
        assert needle in card, needle

    # The card's onnxruntime lines, as a user pastes them: no project on the path, and it can't import it.
    code = re.search(r"With onnxruntime, numpy and Pillow only.*?```python\n(.*?)```", card, re.S).group(1)
    assert len(code.strip().splitlines()) <= 5
    image = _image(tiny_runs, tmp_path / "bundle")
    probe = ("import importlib.util, sys\nassert importlib.util.find_spec('core') is None, 'project code importable'\n"
             + code + "import json as _j; print(_j.dumps(logits[0].tolist()))\n")
    res = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path / "bundle", capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    printed_class, logits_line = res.stdout.strip().splitlines()[-2:]
    ours = predict.predict(loaded, image, k=1)[0][0]
    assert printed_class == ours
    with torch.inference_mode():
        ref = loaded.model(predict.data.batch_input(predict.load_image(image, 32), loaded.spec.mean, loaded.spec.std))[0].numpy()
    assert np.abs(np.array(json.loads(logits_line)) - ref).max() < 1e-4


def test_pt_bundle_holds_safetensors_that_rebuild_the_model(tiny_runs, isolated_home):
    from safetensors.torch import load_file

    from core.train import backbones

    loaded = load_run_model(tiny_runs.digits)
    path = bundle.write(loaded, "pt", isolated_home / "exports" / "d.zip", {"run_id": "digits"})
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extract("model.safetensors", isolated_home)
        card = zf.read("README.md").decode()
    assert {"model.pt", "model.safetensors", "signature.json", "README.md", "config.json", "class_names.json"} <= names
    assert "run `digits`" in card and "apply them before model.pt" in card
    model = backbones.build(loaded.spec, loaded.num_classes, loaded.image_size).eval()
    model.load_state_dict(load_file(isolated_home / "model.safetensors"))
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded.model(x))
    with pytest.raises(Exception, match="A bundle is a ZIP"):
        bundle.write(loaded, "pt", isolated_home / "d.tar", {})
