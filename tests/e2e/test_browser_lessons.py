"""Advisor, adaptation and skip connections in a real browser.

Seeds a tiny finished run, one AdaBN adaptation of it and a short skip demo with the CLI's commands,
run in one Python process (into the app's data folder), then: the Experiment page measures the digits and shows the
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


# The three seeds in one Python process: each `python -m core` pays the engine's imports again (torch,
# torchvision, scikit-learn), which was most of their 35 s (train 16.5 s, adapt 10.8 s, skip-demo 7.8 s
# as three processes; 9.6 s as one, 2 cores, other load beside it). Same commands, same store, same files.
SEED = """
import contextlib, io, json, sys
from core.cli.main import main

def cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(list(argv))
    if rc:
        sys.exit(f"core {' '.join(argv)} exited with {rc}")
    return out.getvalue()

home = sys.argv[1]
run = json.loads(cli("train", "--backbone", "small_cnn", "--strategy", "scratch", "--image-size", "16",
                     "--epochs", "1", "--device", "cpu", "--no-progress", "--json"))
adapted = json.loads(cli("adapt", "--run", run["run_id"], "--method", "adabn", "--json"))
cli("skip-demo", "--depths", "8,14", "--steps", "20", "--out", home + "/skipdemo/batchnorm.json")
print(json.dumps({"run": run, "adapted": adapted}))
"""


def seed(home) -> dict:
    """A tiny finished run, its AdaBN adaptation and a short skip demo, by the CLI's own commands."""
    (home / "skipdemo").mkdir()
    env = {**os.environ, "TLAB_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(NONET), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", SEED, str(home)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def no_exception(page) -> None:
    exc = page.get_by_test_id("stException")
    if exc.count():
        pytest.fail(f"the page at {page.url} shows an exception:\n{exc.first.inner_text()}")


def test_advisor_adaptation_and_skip_connections(app_server, page, snap, wait_idle):
    adapted = seed(app_server.home)["adapted"]

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
