"""The training recipe from a terminal: `train --json` and `show --json` say
which epoch's weights were scored, why the run stopped and how calibrated it
is; `datasets --describe` counts classes and warns about imbalance."""

from __future__ import annotations

import json

import pytest

from helpers import image_folder
from core.cli.main import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")


def cli_json(capsys, *args: str) -> dict:
    code = cli_main([*args, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.mark.slow
def test_train_and_show_report_best_epoch_stop_reason_and_calibration(tmp_path, capsys):
    ds = image_folder(tmp_path / "noise", {"a": 60, "b": 60})  # labels carry no signal: validation loss climbs
    out = cli_json(capsys, "train", "--backbone", "mlp", "--strategy", "scratch", "--dataset", ds, "--epochs", "12",
                   "--image-size", "16", "--batch-size", "16", "--lr", "0.01", "--patience", "2", "--no-progress")
    assert out["status"] == "finished" and out["epochs"] < 12
    assert out["reason"] == out["stop_reason"] == f"stopped early at epoch {out['epochs']} (best {out['best_epoch']})"
    assert out["scored_epoch"] == out["best_epoch"] == out["epochs"] - 2
    assert 0 <= out["ece"] <= 1 and 0 <= out["ece_calibrated"] <= 1 and out["balanced_accuracy"] is not None
    shown = cli_json(capsys, "show", out["run_id"])
    for key in ("best_epoch", "stop_reason", "ece", "ece_calibrated", "balanced_accuracy"):
        assert shown[key] == out[key]
    assert cli_main(["show", out["run_id"]]) == 0
    assert "stopped early" in capsys.readouterr().out


def test_describe_counts_classes_and_warns_past_three_to_one(tmp_path, capsys):
    ds = image_folder(tmp_path / "pets", {"cat": 40, "fox": 10}, size=8)
    out = cli_json(capsys, "datasets", "--describe", ds)
    assert out["counts"] == [{"class": "cat", "images": 40}, {"class": "fox", "images": 10}]
    assert out["imbalance"] == 4.0 and "'cat' has 4.0x the images of 'fox'" in out["warning"]
    even = cli_json(capsys, "datasets", "--describe", image_folder(tmp_path / "even", {"a": 9, "b": 3}, size=8))
    assert even["imbalance"] == 3.0 and even["warning"] == ""
