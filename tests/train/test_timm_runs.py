"""Six timm families end to end on digits, pretrained from a Hugging Face
cache written here (never the network): a tiny run trains, its checkpoint
reads back and predicts, Grad-CAM draws (CNNs and transformers alike), and the ONNX export
round-trips through onnxruntime; a timm backbone under torchrun (DDP) and in
the strategy advisor. Each is a real training: slow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.insight import explain, export, predict
from core.train import data, engine
from core.train.checkpoint import load_run_model
from core.train.config import RunConfig
from helpers import fake_hf_cache

FAMILIES = ["timm:resnet10t", "timm:convnext_atto", "timm:mobilenetv3_small_050", "timm:regnetx_002",
            "timm:vit_tiny_patch16_224", "timm:swin_tiny_patch4_window7_224"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.mark.parametrize("name", FAMILIES)
def test_a_family_trains_predicts_draws_grad_cam_and_exports(name, tmp_path, monkeypatch, isolated_home, digit_png):
    states = fake_hf_cache(tmp_path / "hf", [name])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = RunConfig(backbone=name, strategy="partial", freeze_stages=1, dataset="digits", epochs=1, steps=4,
                    image_size=32, batch_size=16, device="cpu", val_fraction=0.05, test_fraction=0.05)
    result = engine.train(cfg, run_dir=tmp_path / "run")
    assert result.status == "finished", result.reason
    assert result.test_accuracy is not None

    loaded = load_run_model(tmp_path / "run")
    body = {k: v for k, v in loaded.model.state_dict().items() if k in states[name]}
    stem = loaded.spec.groups[0][1][0]  # the stem was frozen: still the file's weights, bit for bit
    frozen = [k for k in body if k.startswith(stem + ".") or k == stem]
    assert frozen and all(torch.equal(body[k], states[name][k]) for k in frozen if body[k].shape == states[name][k].shape)

    top = predict.predict(loaded, digit_png, k=3)  # Predict's path: the image preprocessed with the model's mean/std
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and sum(p for _, p in top) <= 1.0 + 1e-6
    test = data.run_split(loaded.config, "test")
    for method in explain.CAM_METHODS:
        cam = explain.gradcam(loaded.model, loaded.spec, test.x[:1], method=method)
        assert cam.heatmap.shape == (32, 32) and 0.0 <= cam.heatmap.min() and cam.heatmap.max() <= 1.0
        assert np.isfinite(cam.heatmap).all() and cam.method == method

    path = export.export(loaded, "onnx", isolated_home / "model.onnx")
    check = export.verify(path, "onnx", loaded, test.x)
    assert check.ok and check.top1_agreement == 1.0


def test_a_timm_backbone_trains_over_two_processes_with_ddp(tmp_path):
    """`torchrun --nproc-per-node 2 -m core train --backbone timm:...`: both ranks load the cached weights."""
    import json
    import os
    import subprocess
    import sys

    from helpers import NONET, ROOT

    fake_hf_cache(tmp_path / "hf", ["timm:regnetx_002"])
    env = {**os.environ, "TLAB_HOME": str(tmp_path / "tlab"), "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": os.pathsep.join([str(NONET), str(ROOT)]), "TLAB_DIST_TIMEOUT": "120", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "core", "train", "--backbone", "timm:regnetx_002", "--strategy", "partial",
                          "--dataset", "digits", "--image-size", "32", "--labels-per-class", "5", "--epochs", "1",
                          "--batch-size", "16", "--device", "cpu", "--no-progress", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["status"] == "finished" and out["test_accuracy"] is not None


def test_the_advisor_ranks_timm_backbones_and_says_which_have_no_batchnorm(tmp_path, monkeypatch):
    from core.lessons import advisor

    names = ["timm:regnetx_002", "timm:vit_tiny_patch16_224"]
    fake_hf_cache(tmp_path / "hf", names)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    advice = advisor.advise("digits", 10, names, image_size=32)
    rows = {r.name: r for r in advice.backbones}
    assert set(rows) == set(names) and all(r.logme is not None for r in rows.values())
    assert rows["timm:regnetx_002"].domain_shift is not None and advice.shift_backbone == "timm:regnetx_002"
    assert rows["timm:vit_tiny_patch16_224"].domain_shift is None and "no BatchNorm" in rows["timm:vit_tiny_patch16_224"].note
