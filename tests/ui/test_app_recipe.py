"""The training recipe on the pages (AppTest, real tiny trainings): the
Experiment page's augmentation preview and recipe settings reach the queued
config; Compare shows calibration; Predict says its probabilities are calibrated."""

from __future__ import annotations

import json

import pytest

from core.runs.store import Store
from core.train.config import RunConfig
from test_app import TINY, app, no_workers, page, train_group  # noqa: F401  (no_workers: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_strong_augmentation_preview_redraws_and_the_recipe_reaches_the_queued_run(no_workers):
    at = app()
    assert not at.get("image")  # no augmentation, no preview
    at.selectbox(key="augment").set_value("strong").run()
    assert not at.exception, at.exception
    assert any("TrivialAugment" in c.value and "draw 1" in c.value for c in at.caption)
    before = [[m.url for m in i.proto.imgs] for i in at.get("image")]
    assert len(at.get("image")) == 2  # a row as stored, a row as the model sees it
    at.button(key="augment_redraw").click().run()
    assert any("draw 2" in c.value for c in at.caption)
    assert [[m.url for m in i.proto.imgs] for i in at.get("image")] != before
    at.number_input(key="patience").set_value(4).run()
    at.selectbox(key="class_weights").set_value("auto").run()
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    cfgs = [json.loads(r["config"]) for r in Store().runs().to_dict("records")]
    assert {(c["augment"], c["auto_augment"], c["patience"], c["class_weights"]) for c in cfgs} == {
        ("strong", "trivial", 4, "auto")}


def test_compare_shows_calibration_and_predict_says_probabilities_are_calibrated(digit_png):
    train_group(RunConfig(**{**TINY, "epochs": 2}, name="cal"))
    at = page("compare")
    table = at.table[0].value
    assert {"balanced accuracy", "scored epoch", "ECE", "ECE calibrated", "stopped"} <= set(table.columns)
    assert 0 <= float(table["ECE"].iloc[0]) <= 1 and table["stopped"].iloc[0] == "completed all 2 epoch(s)"
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Reliability" in s and "temperature-scaled" in s for s in specs)
    at = page("predict")
    at.file_uploader(key="predict_file").set_value(("digit.png", digit_png.read_bytes(), "image/png")).run()
    assert not at.exception, at.exception
    assert any("calibrated probabilities (temperature" in c.value for c in at.caption)
    at.toggle(key="predict_tta").set_value(True).run()
    assert any("flip TTA" in c.value for c in at.caption)
