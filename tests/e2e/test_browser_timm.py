"""A timm backbone from the catalogue, in a real browser: search "resnet10t"
on the Experiment page, see the match with its parameter count and that its
weights are cached, preview its derived layer map, launch a run and watch it
finish. The app runs over a Hugging Face cache written by the test in the
layout timm reads (the network is blocked). Screenshots timm-01..03 go to
tests/e2e/screenshots/.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from helpers import fake_hf_cache

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TRAIN_TIMEOUT_S = 300
RERUN_MS = 180_000  # a script run of the Experiment page, on 2 CPU cores other test suites share


def _no_exception(page) -> None:
    exc = page.get_by_test_id("stException")
    if exc.count():
        pytest.fail(f"the page at {page.url} shows an exception:\n{exc.first.inner_text()}")


def test_search_preview_and_launch_a_timm_backbone(more_apps, page, snap, wait_idle, rerun, tmp_path, monkeypatch):
    fake_hf_cache(tmp_path / "hf", ["timm:resnet10t"])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the app server inherits it
    app = more_apps(tmp_path / "tlab", "timm-app")
    app.wait_healthy()

    page.goto(f"{app.url}/")
    wait_idle(page, timeout_ms=RERUN_MS)
    with rerun(page, timeout_ms=RERUN_MS):
        page.locator(".st-key-backbone_source label[data-testid='stRadioOption']").filter(has_text="timm catalogue").click()
    box = page.locator(".st-key-timm_query input")
    expect(box).to_be_visible(timeout=RERUN_MS)
    box.fill("resnet10t")
    with rerun(page, timeout_ms=RERUN_MS):
        box.press("Enter")
    matches = page.locator(".st-key-timm_matches")
    expect(matches).to_contain_text("resnet10t.c3_in1k", timeout=RERUN_MS)
    expect(matches).to_contain_text("5.4M")
    expect(matches).to_contain_text("cached")
    _no_exception(page)
    snap(page, "timm-01-search.png")

    # one epoch at 32 px on 10 labels per class, no scratch twin: quick on a CPU
    for key, value in (("epochs", "1"), ("image_size", "32"), ("labels_per_class", "10")):
        field = page.locator(f".st-key-{key} input")
        field.fill(value)
        with rerun(page, timeout_ms=RERUN_MS):
            field.press("Enter")
    with rerun(page, timeout_ms=RERUN_MS):
        page.locator(".st-key-with_scratch label").first.click()
    expect(page.get_by_text("1 epoch(s) at 32 px.")).to_be_visible(timeout=RERUN_MS)
    preview = page.locator(".st-key-layer_map_preview")
    expect(preview).to_be_visible()
    expect(preview).to_contain_text("resnet10t.c3_in1k")
    expect(preview).to_contain_text("stage4")
    _no_exception(page)
    snap(page, "timm-02-preview.png")

    launch = page.locator(".st-key-launch").get_by_test_id("stBaseButton-primary")
    expect(launch).to_be_enabled()
    launch.click()
    expect(page).to_have_url(re.compile(r"/live/?(\?.*)?$"), timeout=60_000)
    status = page.locator(".st-key-live_status")
    expect(status).to_be_visible(timeout=60_000)
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while True:
        try:
            expect(status).to_contain_text(re.compile("finished", re.I), timeout=10_000)
            break
        except AssertionError:
            text = status.inner_text() if status.count() else "(status gone)"
            if re.search(r"\b(failed|interrupted|cancelled|error)\b", text, re.I):
                log = app.home / "worker.log"
                pytest.fail(f"the run did not finish:\n{text}\n{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
            if time.monotonic() > deadline:
                pytest.fail(f"the run did not finish in {TRAIN_TIMEOUT_S}s: {text}")
    expect(status).to_contain_text("resnet10t")
    _no_exception(page)
    snap(page, "timm-03-live-finished.png")
