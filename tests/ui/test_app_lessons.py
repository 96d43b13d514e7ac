"""The advisor section, the Adapt page and the Skip connections page through
Streamlit's AppTest, with real measurements, a real (tiny) trained run, and
real background commands."""

from __future__ import annotations

import json
import os
import time

import pytest
from streamlit.testing.v1 import AppTest

from helpers import NONET, ROOT
from core.lessons import adapt
from core.runs import jobs, tasks
from core.runs.store import Store
from core.train.config import RunConfig

TIMEOUT = 180

pytestmark = pytest.mark.usefixtures("one_thread")


def page(name: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if name:
        at.switch_page(f"views/{name}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def charts_titled(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def wait_task(task_id: str, timeout: float = 240) -> str:
    t0 = time.monotonic()
    while (state := tasks.get(task_id).state) == "running":
        assert time.monotonic() - t0 < timeout, "background command did not finish"
        time.sleep(0.5)
    return state


@pytest.fixture
def background_offline(monkeypatch):
    """Background commands run with the network blocked too."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NONET), str(ROOT)]))


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_advisor_measures_recommends_fills_the_form_and_races(monkeypatch):
    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])  # the race is queued, not trained
    at = page()
    at.number_input(key="image_size").set_value(32)
    at.number_input(key="labels_per_class").set_value(5)
    at.run()
    at.button(key="advise").click().run()
    assert not at.exception, at.exception
    assert at.button(key="advise").disabled  # measuring in a background task, not in the page's process
    assert wait_task(at.session_state["advisor_task"]) == "finished", tasks.get(at.session_state["advisor_task"]).error()
    at.run()  # in a browser the progress fragment's timer reruns the page when the task ends
    text = " ".join(m.value for m in at.markdown)
    assert "Recommended: Partial fine-tuning" in text  # 5 digits per class through Lite0: the hard corner
    assert "Where your data sits" in charts_titled(at)
    assert "**Quadrant:** small data, different" in [m.value for m in at.markdown]
    at.button(key="advisor_fill").click().run()
    assert at.selectbox(key="strategy").value == "partial"
    assert at.selectbox(key="backbone").value == "efficientnet_lite0"
    at.button(key="advisor_race").click().run()
    assert not at.exception, at.exception
    runs = Store().runs()
    assert sorted(runs["strategy"]) == sorted(["partial", "feature_extraction", "full"])
    configs = [json.loads(c) for c in runs["config"]]
    assert {c["labels_per_class"] for c in configs} == {5} and {c["image_size"] for c in configs} == {32}


def test_adapt_page_asks_for_a_run_first():
    at = page("adapt")
    assert "train one on the Experiment page first" in at.info[0].value


@pytest.mark.slow
def test_adapt_page_runs_adabn_in_the_background_and_shows_the_result(background_offline):
    cfg = RunConfig(backbone="small_cnn", strategy="scratch", image_size=16, epochs=1, device="cpu", labels_per_class=20)
    jobs.run_foreground(cfg)
    at = page("adapt")
    assert at.selectbox(key="adapt_target").value == "digits_shifted"
    assert "No adaptation of this run yet" in at.info[0].value
    at.button(key="adapt_go").click().run()
    assert wait_task(at.session_state["adapt_task"]) == "finished", tasks.get(at.session_state["adapt_task"]).error()
    at.run()
    assert not at.exception, at.exception
    labels = {m.label: m.value for m in at.metric}
    assert set(labels) >= {"Source accuracy", "Target before", "Target after"}
    assert labels["Target after"].endswith("%")
    assert "Source and target features" in charts_titled(at)
    run_id = at.selectbox(key="adapt_run").value
    assert len(adapt.saved_results(run_id)) == 1


@pytest.mark.slow
def test_skips_page_stage_table_and_the_demo_in_the_background(background_offline):
    at = page("skips")
    cells = " ".join(str(v) for v in at.table[0].value.to_numpy().ravel())
    assert "512x7x7" in cells and "64x112x112" in cells  # ResNet-18 at 224 px
    assert "No result with BatchNorm yet" in at.info[0].value
    at.multiselect(key="skip_depths").set_value([8, 14])
    at.number_input(key="skip_steps").set_value(10)
    at.run()
    at.button(key="skip_run").click().run()
    assert wait_task(at.session_state["skip_task"]) == "finished", tasks.get(at.session_state["skip_task"]).error()
    at.run()
    assert not at.exception, at.exception
    assert charts_titled(at) == ["Training loss vs step", "Gradient norm per layer at initialisation"]
    frame = at.dataframe[0].value
    assert list(frame["depth"]) == [8, 8, 14, 14] and list(frame["stack"]) == ["plain", "residual"] * 2
