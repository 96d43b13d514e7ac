"""The inspection commands from a terminal, on a digits run and a run
trained on a ZIP of class folders: explain, evaluate, embed, filters,
feature-maps, export (lr-find: tests/insight/test_lr_finder.py)."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.cli import main as cli
from core.train import backbones, engine
from helpers import run_cli


@pytest.fixture
def out_dir(isolated_home):
    """Outputs go inside the data folder: the app writes nowhere else."""
    isolated_home.mkdir(parents=True, exist_ok=True)
    return isolated_home


def _json(capsys, argv: list[str]) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def disc_png(tiny_runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "disc.png"
    with zipfile.ZipFile(tiny_runs.zip) as zf:
        path.write_bytes(zf.read("shapes/disc/00.png"))
    return path


def test_explain_writes_the_overlay_png(tiny_runs, disc_png, out_dir, capsys):
    out = _json(capsys, ["explain", "--run", str(tiny_runs.shapes), "--image", str(disc_png),
                         "--out", str(out_dir / "cam.png"), "--json"])
    assert out["predicted"] == out["class"] == "disc" and out["probability"] > 0.5 and out["layer"] == "stage3"
    with Image.open(out_dir / "cam.png") as im:
        assert im.size[0] > 2 * 224 and im.size[1] > 224  # the image and its overlay, side by side
    chosen = _json(capsys, ["explain", "--run", str(tiny_runs.shapes), "--image", str(disc_png), "--class", "bar",
                            "--out", str(out_dir / "bar.png"), "--json"])
    assert chosen["class"] == "bar" and chosen["predicted"] == "disc" and chosen["probability"] < out["probability"]
    plus = _json(capsys, ["explain", "--run", str(tiny_runs.shapes), "--image", str(disc_png), "--method", "gradcam++",
                          "--out", str(out_dir / "plus.png"), "--json"])
    assert plus["method"] == "gradcam++" and plus["class"] == "disc" and out["method"] == "gradcam"


def test_explain_finds_a_run_id_in_the_data_folder_and_writes_only_there(tiny_runs, digit_png, out_dir, tmp_path, capsys):
    shutil.copytree(tiny_runs.digits, out_dir / "20260101-000000-abcdef")
    assert cli.main(["explain", "--run", "20260101-000000-abcdef", "--image", str(digit_png), "--out", str(out_dir / "x.png")]) == 0
    assert "Grad-CAM of Small CNN for class" in capsys.readouterr().out and (out_dir / "x.png").stat().st_size > 1000
    assert cli.main(["explain", "--run", "nope", "--image", str(digit_png), "--out", str(out_dir / "y.png")]) == 2
    assert "No run 'nope'" in capsys.readouterr().err
    assert cli.main(["explain", "--run", "20260101-000000-abcdef", "--image", str(digit_png),
                     "--out", str(tmp_path / "y.png")]) == 2
    assert "outside the data folder" in capsys.readouterr().err and not (tmp_path / "y.png").exists()


@pytest.mark.slow
def test_explain_as_a_process(tiny_runs, disc_png, out_dir):
    """`python -m core explain` end to end, as a person types it."""
    p = run_cli("explain", "--run", str(tiny_runs.shapes), "--image", str(disc_png), "--out", str(out_dir / "p.png"),
                env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    assert "Grad-CAM of Small CNN for class 'disc'" in p.stdout and (out_dir / "p.png").exists()


def test_explain_on_an_mlp_run_says_grad_cam_is_not_available(out_dir, digit_png, capsys):
    spec = backbones.get("mlp")
    run = out_dir / "mlp_run"
    run.mkdir()
    engine.save_atomic({"model": backbones.build(spec, 10, 16).state_dict(), "class_names": [str(i) for i in range(10)],
                        "backbone": "mlp", "image_size": 16, "config": {}}, run / "checkpoint.pt")
    assert cli.main(["explain", "--run", str(run), "--image", str(digit_png), "--out", str(out_dir / "m.png")]) == 2
    err = capsys.readouterr().err
    assert "Grad-CAM is not available for MLP" in err and not (out_dir / "m.png").exists()


def test_evaluate_zip_run_writes_tables_and_the_worst_mistakes(tiny_runs, out_dir, capsys):
    out = _json(capsys, ["evaluate", "--run", str(tiny_runs.shapes), "--json", "--out-dir", str(out_dir)])
    assert out["class_names"] == ["bar", "disc", "square"]
    cm = np.array(out["confusion"])
    assert cm.sum() == out["images"] and np.trace(cm) / cm.sum() == pytest.approx(out["accuracy"])
    with open(out_dir / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", "bar", "disc", "square"] and [list(map(int, r[1:])) for r in rows[1:]] == cm.tolist()
    with open(out_dir / "per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert [r["class"] for r in per_class] == ["bar", "disc", "square"]
    assert [int(r["support"]) for r in per_class] == cm.sum(1).tolist()


def test_evaluate_digits_prints_matrix_metrics_and_top_losses(tiny_runs, capsys):
    assert cli.main(["evaluate", "--run", str(tiny_runs.digits), "--top-losses", "3"]) == 0
    text = capsys.readouterr().out
    assert "confusion matrix (rows: true class, columns: predicted)" in text
    assert "precision" in text and "recall" in text and "top losses" in text


def test_embed_before_and_after(tiny_runs, out_dir, capsys):
    out = _json(capsys, ["embed", "--run", str(tiny_runs.digits), "--out", str(out_dir / "e.csv"), "--json"])
    assert out["separation_after"] > out["separation_before"]
    with open(out_dir / "e.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * out["points"] and {r["stage"] for r in rows} == {"before", "after"}
    zip_out = _json(capsys, ["embed", "--run", str(tiny_runs.shapes), "--method", "tsne", "--json"])
    assert zip_out["points"] >= 9 and 0 <= zip_out["separation_after"] <= 1


def test_filters_and_feature_maps_pngs(tiny_runs, disc_png, out_dir, capsys):
    out = _json(capsys, ["filters", "--run", str(tiny_runs.digits), "--twin", str(tiny_runs.shapes),
                         "--out", str(out_dir / "f.png"), "--json"])
    assert out["layer"] == "stem.0" and out["panels"] == ["random start", "after training", "scratch twin"]
    fm = _json(capsys, ["feature-maps", "--run", str(tiny_runs.shapes), "--image", str(disc_png), "--per-stage", "4",
                        "--out", str(out_dir / "fm.png"), "--json"])
    assert [s["group"] for s in fm["stages"]] == ["stem", "stage1", "stage2", "stage3"]
    assert [len(s["shown"]) for s in fm["stages"]] == [4] * 4
    for name in ("f.png", "fm.png"):
        with Image.open(out_dir / name) as im:
            assert im.mode == "RGB" and im.size[0] > 200


def test_export_cli_verifies_torchscript_of_a_zip_run(tiny_runs, out_dir, capsys):
    """(ONNX: tests/insight/test_export.py and the browser test.)"""
    out = _json(capsys, ["export", "--run", str(tiny_runs.shapes), "--format", "torchscript", "--out", str(out_dir / "m.pt"),
                         "--verify", "--json"])
    assert out["ok"] and out["max_abs_diff"] <= 1e-4 and out["top1_agreement"] == 1.0 and out["megabytes"] > 0.5
    assert cli.main(["export", "--run", str(tiny_runs.shapes), "--format", "pt"]) == 0  # default: exports/ in the data folder
    assert "exported Small CNN (3 classes, 32 px) as pt" in capsys.readouterr().out
    with zipfile.ZipFile(out_dir / "exports" / "shapes-pt.zip") as zf:
        assert "model.pt" in zf.namelist()
