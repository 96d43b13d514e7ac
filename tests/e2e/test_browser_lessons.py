"""Advisor, adaptation and skip connections in a real browser.

Seeds a tiny finished run, one AdaBN adaptation of it and a short skip demo through the CLI
(into the app's data folder), then: the Experiment page measures the digits and shows the
quadrant chart and the recommendation; the Adapt page shows source/target accuracy and the
embedding before/after; the Skip connections page shows both charts and ResNet-18's stage table.
Screenshots lessons-01..03 go to the screenshots folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from helpers import NONET, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def core(home, *args: str) -> str:
    env = {**os.environ, "TLAB_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(NONET), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stderr
    return out.stdout


def no_exception(page) -> None:
    exc = page.get_by_test_id("stException")
    if exc.count():
        pytest.fail(f"the page at {page.url} shows an exception:\n{exc.first.inner_text()}")


def test_advisor_adaptation_and_skip_connections(app_server, page, snap, wait_idle):
    home = app_server.home
    run = json.loads(core(home, "train", "--backbone", "small_cnn", "--strategy", "scratch", "--image-size", "16",
                          "--epochs", "1", "--device", "cpu", "--no-progress", "--json"))
    adapted = json.loads(core(home, "adapt", "--run", run["run_id"], "--method", "adabn", "--json"))
    (home / "skipdemo").mkdir()
    core(home, "skip-demo", "--depths", "8,14", "--steps", "20", "--out", str(home / "skipdemo" / "batchnorm.json"))

    page.goto(app_server.url)
    wait_idle(page)
    page.locator(".st-key-advise button").click()
    expect(page.get_by_text("Recommended:")).to_be_visible(timeout=120_000)
    wait_idle(page)
    no_exception(page)
    expect(page.get_by_text("large data, different").first).to_be_visible()
    snap(page, "lessons-01-advisor.png")

    page.goto(f"{app_server.url}/adapt")
    wait_idle(page)
    no_exception(page)
    expect(page.get_by_text("Target after")).to_be_visible()
    expect(page.get_by_text(f"{adapted['target_after']:.1%}")).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(1)
    snap(page, "lessons-02-adapt.png")

    page.goto(f"{app_server.url}/skips")
    wait_idle(page)
    no_exception(page)
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)
    expect(page.get_by_text("512x7x7")).to_be_visible()
    snap(page, "lessons-03-skips.png")
