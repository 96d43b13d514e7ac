"""Taking runs and settings to another dashboard, in a real browser: the
Experiment page's settings file and the Compare page's pack of runs are
downloaded from one app and uploaded into a fresh one (its own, empty data
folder), which then shows the same run on Compare and the same form.
Screenshots tools-01..04 go to tests/e2e/screenshots/."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from helpers import run_cli
from core.train import runfile

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _no_exception(page) -> None:
    exc = page.get_by_test_id("stException")
    if exc.count():
        pytest.fail(f"the page at {page.url} shows an exception:\n{exc.first.inner_text()}")


def test_settings_and_a_pack_move_to_a_fresh_app(app_server, more_apps, browser, new_context, tmp_path, page, snap,
                                                  wait_idle, rerun):
    fresh = more_apps(tmp_path / "laptop", "tools-fresh-app")  # boots while the run trains
    p = run_cli("train", "--backbone", "small_cnn", "--strategy", "scratch", "--image-size", "16", "--epochs", "1",
                "--labels-per-class", "10", "--device", "cpu", "--no-progress", "--name", "portable run", "--json",
                env={"TLAB_HOME": str(app_server.home), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]

    # 1. The settings of a form, downloaded from the first app.
    page.goto(app_server.url)
    wait_idle(page, 120_000)
    epochs = page.locator(".st-key-epochs input")
    epochs.fill("5")
    with rerun(page):
        epochs.press("Enter")
    expect(page.get_by_text("python -m core launch --epochs 5")).to_be_visible()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download settings").click()
    settings = tmp_path / dl.value.suggested_filename
    dl.value.save_as(settings)
    assert [r["epochs"] for r in runfile.loads(settings.read_text()).runs] == [5, 5]  # the run and its scratch twin
    snap(page, "tools-01-experiment-settings.png")

    # 2. The run as a pack, downloaded from the first app's Compare page.
    page.goto(f"{app_server.url}/compare")
    wait_idle(page, 120_000)
    _no_exception(page)
    button = page.get_by_role("button", name="Download 1 run(s) as a pack (.zip)")
    expect(button).to_be_visible()
    with page.expect_download(timeout=60_000) as dl:
        button.click()
    pack = tmp_path / "runs.zip"
    dl.value.save_as(pack)
    snap(page, "tools-02-compare-download-pack.png")

    # 3. A fresh app on another data folder: empty until the pack is uploaded, then the same run.
    fresh.wait_healthy()
    other = new_context(browser).new_page()
    other.goto(f"{fresh.url}/compare")
    wait_idle(other, 120_000)
    expect(other.get_by_text("No runs yet")).to_be_visible()
    other.get_by_text("Add runs from a pack (.zip)").click()
    with rerun(other, timeout_ms=120_000):
        other.locator(".st-key-compare_pack_upload").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(pack))
    expect(other.get_by_text(f"Added 1 run(s) from runs.zip: {run_id}")).to_be_visible()
    _no_exception(other)
    expect(other.get_by_text("portable run").first).to_be_visible(timeout=60_000)
    assert (tmp_path / "laptop" / run_id / "checkpoint.pt").is_file()
    snap(other, "tools-03-fresh-app-compare.png")

    # 4. The settings file fills the fresh app's form.
    other.goto(fresh.url)
    wait_idle(other, 120_000)
    with rerun(other, timeout_ms=120_000):
        other.locator(".st-key-settings_upload").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(settings))
    expect(other.get_by_text(f"Filled the form from {settings.name}")).to_be_visible()
    expect(other.locator(".st-key-epochs input")).to_have_value("5")
    expect(other.get_by_text("python -m core launch --epochs 5")).to_be_visible()
    _no_exception(other)
    snap(other, "tools-04-fresh-app-settings-filled.png")
    other.context.close()
