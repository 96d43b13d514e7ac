"""The "seeing inside" page parts through AppTest: Grad-CAM on Predict,
per-class metrics and the confusion matrix's images on Compare, the Inspect
page, and the LR finder filling the Experiment form. The runs are the
session's really trained tiny runs, registered in each test's own store."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core import paths
from core.insight import evaluate
from core.runs import tasks
from core.runs.store import Store
from core.train import backbones, engine
from helpers import ROOT

TIMEOUT = 180


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def register(run_folder, name: str, group: str | None = None) -> str:
    """Put a trained run folder in this test's store, as a finished run."""
    ckpt = torch.load(run_folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    store = Store()
    run_id = store.add_run(json.dumps(ckpt["config"], sort_keys=True), name, group, "running")
    shutil.copytree(run_folder, paths.run_dir(run_id))
    acc = evaluate.evaluate_run(paths.run_dir(run_id)).accuracy
    store.set_status(run_id, "finished", epochs_done=ckpt["epoch"], test_accuracy=acc, best_val_accuracy=acc,
                     class_names=json.dumps(ckpt["class_names"]))
    return run_id


def _array(value) -> np.ndarray:
    """A plotly figure JSON array: a plain list, or plotly's base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return flat.reshape([int(n) for n in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value)


def _wait(task) -> str:
    """A background task's end state, waited for."""
    deadline = time.monotonic() + TIMEOUT
    while task.state == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    return task.state


def _walk(node, key: str, inside: bool = False):
    """Image elements (each with its captions) drawn inside the container with this key."""
    inside = inside or getattr(node, "key", None) == key
    if inside and getattr(node, "type", None) == "image":
        yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child, key, inside)


def test_predict_page_shows_a_grad_cam_per_model_and_says_when_there_is_none(tiny_runs, tmp_path):
    digits = register(tiny_runs.digits, "digits")
    shapes = register(tiny_runs.shapes, "shapes", digits)
    mlp = backbones.get("mlp")
    (tmp_path / "mlp").mkdir()
    engine.save_atomic({"model": backbones.build(mlp, 10, 16).state_dict(), "class_names": [str(i) for i in range(10)],
                        "backbone": "mlp", "image_size": 16, "epoch": 1,
                        "config": {**json.loads(Store().run(digits)["config"]), "backbone": "mlp", "image_size": 16}},
                       tmp_path / "mlp" / "checkpoint.pt")
    mlp_id = register(tmp_path / "mlp", "mlp", digits)
    at = page("predict")
    assert set(at.multiselect(key="predict_runs").value) == {digits, shapes, mlp_id}
    at.file_uploader(key="predict_file").set_value(("disc.png", _disc_png(tiny_runs), "image/png")).run()
    assert not at.exception, at.exception
    cams = {run_id: list(_walk(at._tree, f"gradcam_{run_id}")) for run_id in (digits, shapes, mlp_id)}
    assert len(cams[digits]) == 1 and len(cams[shapes]) == 1 and not cams[mlp_id]
    assert cams[shapes][0].captions[0].startswith("Grad-CAM for “disc”") and "stage3 (4×4 map)" in cams[shapes][0].captions[0]
    assert any("Grad-CAM is not available for MLP" in i.value for i in at.info)
    at.selectbox(key="gradcam_class").set_value("square").run()
    assert not at.exception
    assert list(_walk(at._tree, f"gradcam_{shapes}"))[0].captions[0].startswith("Grad-CAM for “square”")
    assert any("no class “square”" in i.value for i in at.info)  # the digits model has no such class


def _disc_png(tiny_runs) -> bytes:
    import zipfile

    with zipfile.ZipFile(tiny_runs.zip) as zf:
        return zf.read("shapes/disc/01.png")


def test_compare_page_shows_per_class_metrics_the_confusion_matrix_and_its_images(tiny_runs):
    digits = register(tiny_runs.digits, "digits")
    ev = evaluate.evaluate_run(paths.run_dir(digits))
    cm = ev.confusion()
    at = page("compare")
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    heat = next(spec for spec in charts.values() if spec["data"] and spec["data"][0]["type"] == "heatmap")
    assert np.array_equal(_array(heat["data"][0]["z"]), cm)
    bars = next(spec for spec in charts.values() if spec["layout"].get("title", {}).get("text") == "F1 per class")
    assert np.allclose(_array(bars["data"][0]["y"]), [r["f1"] for r in evaluate.per_class_metrics(cm, ev.class_names)])
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.unravel_index(int(np.argmax(off)), off.shape)  # preselected: the biggest confusion
    assert at.selectbox(key=f"cmp_cell_true_{digits}").value == t and at.selectbox(key=f"cmp_cell_pred_{digits}").value == p
    cell = list(_walk(at._tree, "cmp_cell_images"))
    assert sum(len(i.captions) for i in cell) == cm[t, p]
    wrong = int((ev.predicted != ev.y).sum())
    top = list(_walk(at._tree, "cmp_top_losses"))
    assert sum(len(i.captions) for i in top) == min(12, wrong) and wrong > 0
    first = top[0].captions[0]
    i = ev.top_losses(1)[0]
    assert first.startswith(f"{ev.class_names[ev.y[i]]} → {ev.class_names[ev.predicted[i]]}")
    at.selectbox(key=f"cmp_cell_true_{digits}").set_value(3).run()
    at.selectbox(key=f"cmp_cell_pred_{digits}").set_value(3).run()
    assert sum(len(i.captions) for i in _walk(at._tree, "cmp_cell_images")) == cm[3, 3]  # the right answers too


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_inspect_page_feature_space_filters_feature_maps_and_a_checked_export(tiny_runs):
    """(The ONNX button: the browser test.)"""
    shapes = register(tiny_runs.shapes, "shapes")
    at = page("inspect")
    assert at.selectbox(key="inspect_run").value == shapes
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    scatters = [s for s in specs if s["data"] and s["data"][0]["type"] == "scattergl"]
    assert len(scatters) == 2 and [t["name"] for t in scatters[0]["data"]] == ["bar", "disc", "square"]
    assert any("before" in m.value and "after training" in m.value for m in at.markdown)
    filters = list(_walk(at._tree, "inspect_filters"))
    assert [i.captions[0] for i in filters] == ["random start · stem.0", "after training · stem.0"]
    maps = list(_walk(at._tree, "inspect_maps"))
    assert [c.split(":")[0] for i in maps for c in i.captions] == ["input, as the model sees it", "stem", "stage1",
                                                                    "stage2", "stage3"]
    at.button(key="export_build_torchscript").click().run()
    assert not at.exception, at.exception
    assert at.button(key="export_build_torchscript").disabled  # exporting in a background task
    assert _wait(tasks.get(at.session_state["export_task_torchscript"])) == "finished"
    at.run()  # in a browser the progress fragment's timer reruns the page when the task ends
    assert at.get("download_button")[1].proto.label.startswith("TorchScript")
    assert any("same top-1 for 100.0%" in c.value for c in at.caption), [c.value for c in at.caption]


@pytest.mark.slow
def test_lr_finder_fills_the_experiment_form(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key="backbone").set_value("small_cnn").run()
    at.selectbox(key="strategy").set_value("scratch").run()
    at.number_input(key="image_size").set_value(16).run()
    at.number_input(key="lr_finder_steps").set_value(30).run()
    before = at.number_input(key="lr_scratch").value
    at.button(key="lr_finder_run").click().run()
    assert not at.exception, at.exception
    task = tasks.get(at.session_state["lr_finder_task"])  # a background task: the page stays responsive
    assert at.button(key="lr_finder_run").disabled and task.state == "running"
    assert _wait(task) == "finished", task.error()
    at.run()  # in a browser the progress fragment's timer reruns the page when the task ends
    assert any(json.loads(c.proto.spec)["layout"]["title"]["text"] == "Learning-rate finder" for c in at.get("plotly_chart"))
    use = at.button(key="lr_finder_use")
    suggested = float(use.label.split("(")[1].rstrip(")"))
    assert 1e-6 <= suggested <= 1.0 and suggested != before
    use.click().run()
    assert not at.exception
    assert at.number_input(key="lr_scratch").value == pytest.approx(suggested, rel=0.01)
    at.number_input(key="image_size").set_value(32).run()  # a different setup: the curve no longer applies
    assert any("settings changed" in w.value for w in at.warning)
