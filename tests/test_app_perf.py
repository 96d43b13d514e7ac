"""Performance switches and limits as a person meets them on the pages."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from core import jobs
from core.store import Store


@pytest.fixture
def no_workers(monkeypatch):
    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])


def test_the_compile_switch_reaches_the_queued_runs(no_workers):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert at.checkbox(key="compile").value is False  # off by default: compiling costs a minute on a CPU
    at.checkbox(key="compile").check().run()
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    configs = [json.loads(c) for c in Store().runs()["config"]]
    assert len(configs) == 2 and all(c["compile"] is True for c in configs)  # the run and its scratch twin
