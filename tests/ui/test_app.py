"""The dashboard's pages through Streamlit's AppTest: each `run()` is one full
script run, as a person's click causes. Runs are real (tiny) trainings in a
real SQLite store."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from core.runs import jobs
from core.children import pid_start
from core.runs.store import Store
from core.train.config import RunConfig

TIMEOUT = 120

pytestmark = pytest.mark.usefixtures("one_thread")


def app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def train_group(*cfgs: RunConfig) -> list[str]:
    """Really train runs, in this process, as one group."""
    store = Store()
    group = None
    ids = []
    for cfg in cfgs:
        run_id = store.add_run(cfg.to_json(), cfg.name, group, "running")
        group = group or run_id
        store.set_status(run_id, "running", worker_pid=os.getpid(), pid_start=pid_start(os.getpid()), started=time.time())
        assert jobs.execute(store, run_id)["status"] == "finished"
        ids.append(run_id)
    return ids


@pytest.fixture
def no_workers(monkeypatch):
    """Launch queues runs but starts no worker: the test inspects the queue."""
    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])


# 10 labels per class: 3 steps an epoch. No page test here asserts more than "above zero" of accuracy.
TINY = dict(backbone="mlp", strategy="scratch", image_size=16, epochs=1, device="cpu", labels_per_class=10)


def test_experiment_defaults_are_the_offline_demo():
    at = app()
    assert at.title[0].value == "Transfer Learning Lab"
    assert at.selectbox(key="backbone").value == "efficientnet_lite0"
    assert at.selectbox(key="strategy").value == "full"
    assert at.selectbox(key="dataset").value == "digits"
    assert at.checkbox(key="with_scratch").value is True
    assert not at.button(key="launch").disabled
    assert metric(at, "Trainable share") == "100.00%"
    assert len(at.get("plotly_chart")) == 1  # the layer map preview


def test_changing_the_strategy_changes_the_plan_preview():
    at = app()
    full = metric(at, "Trainable parameters")
    at.selectbox(key="strategy").set_value("feature_extraction").run()
    assert metric(at, "Trainable parameters") == f"{1280 * 10 + 10:,}"  # the head alone
    assert metric(at, "Trainable parameters") != full
    spec = at.get("plotly_chart")[0].proto.spec
    assert "stem" in spec and "head" in spec
    at.selectbox(key="strategy").set_value("partial").run()
    partial = int(metric(at, "Trainable parameters").replace(",", ""))
    at.number_input(key="freeze_stages_efficientnet_lite0").set_value(5).run()
    assert int(metric(at, "Trainable parameters").replace(",", "")) < partial


def test_default_launch_queues_a_transfer_run_and_its_scratch_twin_in_one_group(no_workers):
    at = app()
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    runs = Store().runs()
    assert len(runs) == 2 and runs["group_id"].nunique() == 1
    assert sorted(runs["strategy"]) == ["full", "scratch"]
    assert set(runs["status"]) == {"queued"}
    assert Store().queued()[0]["side_by_side"] == 1  # the twin trains beside it
    assert set(runs["epochs"]) == {3} and {c for c in runs["config"] if '"image_size": 64' in c}


def test_impossible_choices_are_explained_and_launch_is_disabled():
    at = app()
    at.selectbox(key="backbone").set_value("small_cnn").run()
    assert any("scratch" in w.value for w in at.warning)
    assert at.button(key="launch").disabled
    at.selectbox(key="strategy").set_value("scratch").run()
    assert at.button(key="launch").disabled is False


def test_a_bad_zip_upload_is_an_error_message_not_a_crash():
    at = app()
    at.selectbox(key="dataset").set_value("upload a ZIP of class folders").run()
    assert any("upload" in w.value.lower() or "choose" in w.value.lower() for w in at.warning)
    at.file_uploader(key="zip_upload").set_value(("classes.zip", b"this is not a zip", "application/zip")).run()
    assert not at.exception
    assert any("not a readable ZIP" in e.value for e in at.error)
    assert at.button(key="launch").disabled


def test_live_page_without_runs_says_where_to_start():
    at = page("live")
    assert any("No runs yet" in i.value for i in at.info)


def test_live_page_shows_status_curves_and_the_layer_map():
    ids = train_group(RunConfig(**{**TINY, "epochs": 2}, name="a"), RunConfig(**{**TINY, "epochs": 2, "seed": 1}, name="b"))
    at = page("live")
    text = " ".join(m.value for m in at.markdown)
    assert text.count("finished") >= 2
    assert len(at.get("plotly_chart")) >= 4  # curves, step loss, lr, layer stats
    assert at.multiselect(key="live_pick").value == ids


def test_compare_page_tables_both_runs_with_test_accuracy():
    ids = train_group(RunConfig(**TINY, name="one"), RunConfig(**{**TINY, "seed": 1}, name="two"))
    at = page("compare")
    table = at.table[0].value
    assert len(table) == 2
    assert [any(i[-6:] in r for r in table["run"]) for i in ids] == [True, True]
    assert all(0 < float(v) <= 1 for v in table["test accuracy"])
    assert len(at.get("plotly_chart")) >= 3


def test_predict_page_gives_top5_per_model(digit_png):
    train_group(RunConfig(**TINY, name="p1"), RunConfig(**{**TINY, "seed": 1}, name="p2"))
    at = page("predict")
    png = digit_png.read_bytes()
    at.file_uploader(key="predict_file").set_value(("digit.png", png, "image/png")).run()
    assert not at.exception, at.exception
    tables = at.table
    assert len(tables) == 2
    for t in tables:
        df = t.value
        assert len(df) == 5 and set(df["class"]) <= {str(i) for i in range(10)}
        probs = [float(p) for p in df["probability"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 5 * 0.0005  # shown rounded to 3 places


def test_predict_page_rejects_an_unreadable_image():
    train_group(RunConfig(**TINY))
    at = page("predict")
    at.file_uploader(key="predict_file").set_value(("broken.png", b"\x89PNG not really", "image/png")).run()
    assert not at.exception
    assert any("could not read" in e.value.lower() for e in at.error)


def _zip_of_classes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, colour in (("cats", (200, 60, 40)), ("dogs", (40, 70, 200))):
            for i in range(5):
                img = io.BytesIO()
                Image.new("RGB", (40, 30), colour).save(img, format="PNG")
                z.writestr(f"pets/{name}/{i}.png", img.getvalue())
    return buf.getvalue()


def test_a_zip_of_class_folders_shows_a_preview_and_can_be_launched(no_workers, isolated_home):
    at = app()
    at.selectbox(key="dataset").set_value("upload a ZIP of class folders").run()
    at.file_uploader(key="zip_upload").set_value(("pets.zip", _zip_of_classes(), "application/zip")).run()
    assert not at.exception and not at.error
    assert any("10 images in 2 classes" in m.value for m in at.markdown)
    counts = at.table[0].value
    assert list(counts["class"]) == ["cats", "dogs"] and list(counts["images"]) == [5, 5]
    thumbs = at.get("image")
    assert [img.captions for img in thumbs] == [["cats"] * 5, ["dogs"] * 5]  # a row of thumbnails per class
    at.button(key="launch").click().run()
    runs = Store().runs()
    assert len(runs) == 2 and all(d.startswith("folder:") for d in runs["dataset"])
    assert all(str(isolated_home) in d for d in runs["dataset"])  # the upload is kept in the data folder


def test_weights_upload_for_a_backbone_without_cached_weights(no_workers, tmp_path):
    import torch

    from core.train import backbones

    at = app()
    at.selectbox(key="backbone").set_value("resnet18").run()
    assert any("resnet18-f37072fd.pth" in i.value for i in at.info)
    at.file_uploader(key="weights_upload").set_value(("junk.pt", b"not weights at all", "application/octet-stream")).run()
    assert not at.exception
    assert any("Could not read weights file" in e.value for e in at.error)
    state = backbones.build(backbones.get("resnet18"), 1000, 64).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    at.file_uploader(key="weights_upload").set_value(("mine.pt", buf.getvalue(), "application/octet-stream")).run()
    assert any("fits ResNet-18" in s.value for s in at.success)
    at.button(key="launch").click().run()
    cfg = json.loads(Store().runs().query("strategy == 'full'")["config"].iloc[0])
    assert cfg["weights"] and cfg["weights"].endswith("mine.pt")


def test_ended_runs_can_be_deleted_from_the_runs_list():
    keep, gone = train_group(RunConfig(**TINY, name="keep"), RunConfig(**{**TINY, "seed": 1}, name="gone"))
    at = page("live")
    at.multiselect(key="delete_pick").set_value([gone]).run()
    at.button(key="delete_runs").click().run()
    assert not at.exception
    assert list(Store().runs()["id"]) == [keep]


def test_experiment_page_launches_a_race_and_a_sweep(no_workers):
    at = app()
    at.radio(key="mode").set_value("Strategy race").run()
    assert at.multiselect(key="race_strategies").value == ["feature_extraction", "full", "scratch"]
    at.button(key="launch").click().run()
    runs = Store().runs()
    assert sorted(runs["strategy"]) == ["feature_extraction", "full", "scratch"] and set(runs["kind"]) == {"race"}
    at = app()
    at.radio(key="mode").set_value("Labels-per-class sweep").run()
    at.button(key="launch").click().run()
    sweep = Store().runs().query("kind == 'sweep'")
    assert len(sweep) == 2 * 4 * 2  # strategies x labels (1, 5, 10, all) x seeds
    assert {json.loads(c)["steps"] for c in sweep["config"]} == {60}


def test_distillation_needs_a_finished_teacher():
    at = app()
    at.radio(key="mode").set_value("Knowledge distillation").run()
    assert any("finished teacher" in w.value for w in at.warning)
    assert at.button(key="launch").disabled


def test_live_page_says_when_curves_will_appear_for_a_run_not_yet_through_an_epoch():
    jobs.launch(RunConfig(**TINY), start_worker=False)
    at = page("live")
    text = " ".join(m.value for m in at.markdown)
    assert "queued" in text
    assert "first epoch ends" in at.get("plotly_chart")[0].proto.spec


def test_live_shows_how_far_a_running_runs_first_decode_is():
    """A run launched on a large folder nobody decoded yet spends its first minutes decoding: Live shows how far
    (the run's latest note of it), not 'loading data and model'. Seeded as a worker leaves it mid-decode."""
    from core.train import decode

    run_id = jobs.launch(RunConfig(**TINY), start_worker=False)
    store = Store()
    assert store.claim_next(os.getpid())["id"] == run_id  # running here, no step yet
    for done in (0, 2000, 4000):
        store.log(run_id, decode.progress_text(done, 20000))
    at = page("live")
    bars = [b.proto.text for b in at.get("progress")]
    assert bars == ["decoding 4,000 / 20,000 images on every core…"], bars
    assert at.get("progress")[0].proto.value == 20
    store.log(run_id, decode.progress_text(20000, 20000))  # decoded: the model and the first steps come next
    at.run()
    assert [b.proto.text for b in at.get("progress")] == ["loading data and model…"]


def test_a_folder_outside_the_allowed_ones_names_the_command_and_counts_once_allowed(tmp_path, monkeypatch):
    from core.cli.main import main as cli_main
    from helpers import photos_folder

    monkeypatch.delenv("TLAB_FOLDER_ROOTS")
    photos = photos_folder(tmp_path / "photos", 40, classes=4, large_every=20, corrupt=0)
    at = app()
    at.selectbox(key="dataset").set_value("a folder on this machine").run()
    at.text_input(key="folder_path").input(str(photos)).run()
    refusal = " ".join(e.value for e in at.error).replace("\\", "")  # as shown: markdown escapes undone
    assert f"python -m core allow {photos}" in refusal and at.button(key="launch").disabled
    assert any(c.value.endswith(f"python -m core allow {photos}") for c in at.code)  # in a box to copy from
    assert cli_main(["allow", str(photos)]) == 0  # in a terminal, while the app runs
    at.run()
    assert not at.error and any("40 images in 4 classes" in m.value for m in at.markdown)
    assert [len(img.captions) for img in at.get("image")] == [8, 8, 8, 8]
    assert any("Not decoded at 64 px yet" in c.value for c in at.caption)
    assert at.button(key="folder_decode").label == "Decode the 40 images at 64 px now"
