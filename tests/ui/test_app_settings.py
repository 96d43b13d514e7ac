"""The Experiment page's settings file: what it downloads is what the CLI
trains, what it copies as a command is the same run, and an uploaded file
fills the form."""

from __future__ import annotations

import shlex

import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from core.cli import options
from core.cli.main import build_parser
from core.runs import jobs
from core.runs.store import Store
from core.service import settings
from core.train import runfile
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def downloads(monkeypatch):
    """What the page's Download settings button holds, as the page made it."""
    made = []
    real = settings.settings_text

    def recording(cfgs, kind=""):
        made.append(real(cfgs, kind))
        return made[-1]

    monkeypatch.setattr(settings, "settings_text", recording)
    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])
    return made


def cli_configs(argv: list[str]) -> list[RunConfig]:
    args = build_parser().parse_args(argv)
    args.argv = argv
    return options.run_configs(args, check=False)[0]


def test_form_to_file_to_cli_gives_the_runs_the_page_launches(downloads, tmp_path):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.selectbox(key="strategy").set_value("partial")
    at.number_input(key="epochs").set_value(2)
    at.number_input(key="labels_per_class").set_value(7)
    at.selectbox(key="augment").set_value("light").run()
    assert not at.exception, at.exception
    name, text = downloads[-1]
    assert name == "group.toml"  # the run and its scratch twin
    path = tmp_path / name
    path.write_text(text)
    from_file = cli_configs(["launch", "--config", str(path)])
    line = at.code[0].value
    assert line.startswith("python -m core launch ")
    from_command = cli_configs(shlex.split(line)[3:])
    at.button(key="launch").click().run()
    launched = [RunConfig.from_json(r["config"]) for r in sorted(Store().queued(), key=lambda r: r["created"])]
    assert from_file == launched
    assert from_command[0] == launched[0].replace(name="")  # the command names no run
    assert (launched[0].strategy, launched[0].epochs, launched[0].labels_per_class, launched[0].augment) == ("partial", 2, 7, "light")


def test_an_uploaded_settings_file_fills_the_form_and_keeps_what_the_form_lacks(downloads):
    cfg = RunConfig(backbone="small_cnn", strategy="scratch", epochs=4, image_size=32, lr=0.02, labels_per_class=5,
                    seed=3, weight_decay=0.01, val_fraction=0.2, name="from a file")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.file_uploader(key="settings_upload").set_value(("mine.toml", runfile.dumps(cfg).encode(), "application/toml")).run()
    assert not at.exception, at.exception
    assert any("Filled the form from mine.toml" in s.value for s in at.success)
    assert at.selectbox(key="backbone").value == "small_cnn" and at.number_input(key="epochs").value == 4
    assert at.number_input(key="lr_scratch").value == 0.02 and at.number_input(key="labels_per_class").value == 5
    at.button(key="launch").click().run()
    (row,) = Store().queued()
    assert RunConfig.from_json(row["config"]).replace(device="auto", processes=1) == cfg.replace(device="auto")


def test_a_bad_settings_file_is_one_message_and_the_form_stays(downloads):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.file_uploader(key="settings_upload").set_value(("bad.toml", b"epochs = 3\nlearning_rate = 1\n", "text/plain")).run()
    assert not at.exception, at.exception
    assert any("unknown setting(s) learning" in e.value and "Known settings" in e.value for e in at.error)
    assert at.selectbox(key="backbone").value == "efficientnet_lite0"


def test_compare_page_of_an_empty_data_folder_takes_a_pack(isolated_home):
    import io
    import json
    import zipfile

    from core.runs import portable

    rows = {"runs": {"columns": ["id", "group_id", "name", "config", "status", "created", "test_accuracy", "epochs_done"],
                     "rows": [["20261201-101010-abcdef", "g-1", "from the cluster", RunConfig().to_json(), "finished", 1.0, 0.91, 3]]},
            "epoch_metrics": {"columns": ["run_id", "epoch", "train_loss", "val_accuracy"],
                              "rows": [["20261201-101010-abcdef", e, 1.0 / e, 0.3 * e] for e in (1, 2, 3)]}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": portable.FORMAT, "schema": 3, "runs": ["20261201-101010-abcdef"]}))
        zf.writestr("store/20261201-101010-abcdef.json", json.dumps(rows))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("views/compare.py").run()
    assert any("No runs yet" in i.value for i in at.info)
    at.file_uploader(key="compare_pack_upload").set_value(("runs.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception, at.exception
    assert any("Added 1 run(s) from runs.zip" in s.value for s in at.success)
    assert at.multiselect(key="compare_pick").value == ["20261201-101010-abcdef"]
    at.file_uploader(key="compare_pack_upload").set_value(("again.zip", buf.getvalue(), "application/zip")).run()
    assert any("already has run(s)" in e.value for e in at.error)
