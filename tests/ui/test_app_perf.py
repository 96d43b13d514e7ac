"""Performance switches and limits as a person meets them on the pages."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from core.runs import jobs
from core.runs.store import Store


@pytest.fixture
def no_workers(monkeypatch):
    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])


def test_the_compile_precision_and_layout_settings_reach_the_queued_runs(no_workers):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert at.checkbox(key="compile").value is False  # off by default: compiling costs a minute on a CPU
    assert at.selectbox(key="precision").value == "auto" and at.selectbox(key="channels_last").value is None
    assert "auto (fp32 here)" in at.selectbox(key="precision").options  # what auto means on this CPU
    at.checkbox(key="compile").check()
    at.selectbox(key="precision").select("bf16")
    at.selectbox(key="channels_last").select(True).run()
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    configs = [json.loads(c) for c in Store().runs()["config"]]
    assert len(configs) == 2  # the run and its scratch twin, both so
    assert all(c["compile"] is True and c["precision"] == "bf16" and c["channels_last"] is True for c in configs)


def _long_run(steps: int) -> str:
    """A finished run whose step series is long (as 50 epochs of 500 steps would be)."""
    from core.train.config import RunConfig

    store = Store()
    run_id = store.add_run(RunConfig(backbone="small_cnn", strategy="scratch", epochs=10).to_json(), "long", None, "finished")
    per_epoch = steps // 10
    with store.tx() as c:
        c.executemany("INSERT INTO step_metrics VALUES (?,?,?,?,?,?,?)",
                      [(run_id, s, 1 + (s - 1) // per_epoch, float(s), 1e-3, 100.0, float(s)) for s in range(1, steps + 1)])
        c.executemany("INSERT INTO epoch_metrics VALUES (?,?,?,?,?,?,?,?,?)",
                      [(run_id, e, 1.0, 0.5, 1.0, 0.5, 1.0, 100.0, float(e)) for e in range(1, 11)])
        c.execute("UPDATE runs SET steps_per_epoch=?, epochs_done=10 WHERE id=?", (per_epoch, run_id))
    return run_id


def test_long_step_series_are_averaged_down_in_the_store():
    run_id = _long_run(5000)
    full = Store().metrics([run_id], "step")
    thin = Store().metrics([run_id], "step", max_points=500)
    assert len(full) == 5000 and 500 <= len(thin) <= 501
    assert thin["step"].iloc[0] == 1 and thin["step"].iloc[-1] == 5000  # from the first step to the last
    assert thin["epoch"].iloc[-1] == 10
    assert set(thin["step"].diff().dropna()) <= {10, 9}  # evenly spaced
    assert (thin["loss"] == thin["step"]).all()  # each row a real logged step, values intact
    short = Store().metrics([run_id], "step", max_points=10_000)
    assert len(short) == 5000  # a series already short enough comes back whole
    # On a GPU the engine logs every 10th step: the points stay evenly spread over those.
    store = Store()
    with store.tx() as c:
        c.execute("DELETE FROM step_metrics WHERE run_id = ? AND step % 10 != 0", (run_id,))
    gpu = store.metrics([run_id], "step", max_points=100)
    assert 100 <= len(gpu) <= 101 and gpu["step"].iloc[-1] == 5000 and set(gpu["step"].diff().dropna()) <= {50, 40}  # the last gap: to the last step


def test_live_page_draws_a_long_run_with_a_few_hundred_points():
    _long_run(20_000)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("views/live.py").run()
    assert not at.exception, at.exception
    spec = json.loads(next(c.proto.spec for c in at.get("plotly_chart") if "Training loss by step" in c.proto.spec))
    xs = [_values(t["x"]) for t in spec["data"]]
    assert xs and all(len(x) <= 500 for x in xs)  # raw and smoothed lines, each thinned
    assert all(x[-1] == 20_000 for x in xs)  # and still reaching the last step


def _values(v) -> list:
    """A plotly JSON array: a list, or a typed array (base64 bytes and a dtype)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)
