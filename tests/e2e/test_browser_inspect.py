"""Seeing inside a trained run, in a real browser: Grad-CAM on Predict, the
confusion matrix with its mistakes on Compare, the Inspect page's tabs with a
checked ONNX export, and the LR finder filling the Experiment form (for a
small CNN at 32 px, quick on a CPU).

One small run (small_cnn from scratch, 32 px, 1 epoch on digits) is trained
by the CLI into the app's data folder first. Screenshots inspect-01..05 go
to tests/e2e/screenshots/.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from helpers import run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _no_exception(page) -> None:
    exc = page.get_by_test_id("stException")
    if exc.count():
        pytest.fail(f"the page at {page.url} shows an exception:\n{exc.first.inner_text()}")


@pytest.fixture(scope="module")
def seeded(app_server, tmp_path_factory):
    p = run_cli("train", "--backbone", "small_cnn", "--strategy", "scratch", "--image-size", "32", "--epochs", "1",
                "--device", "cpu", "--no-progress", "--name", "inspect me", "--json",
                env={"TLAB_HOME": str(app_server.home), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    from sklearn.datasets import load_digits

    d = load_digits()
    png = tmp_path_factory.mktemp("img") / "three.png"
    i = int(np.nonzero(d.target == 3)[0][5])
    Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).resize((64, 64), Image.NEAREST).save(png)
    return run_id, png


def test_seeing_inside_a_run(app_server, seeded, page, snap, wait_idle, rerun):
    run_id, png = seeded
    url = app_server.url

    page.goto(f"{url}/predict")
    wait_idle(page)
    with rerun(page, timeout_ms=120_000):
        page.locator(".st-key-predict_upload").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(png))
    cam = page.locator(f".st-key-gradcam_{run_id}")
    expect(cam.get_by_text("Grad-CAM for")).to_be_visible()
    _no_exception(page)
    assert cam.locator("img").first.evaluate("i => i.naturalWidth") == 224
    snap(page, "inspect-01-predict-gradcam.png")

    page.goto(f"{url}/compare")
    wait_idle(page, 120_000)
    expect(page.locator(".st-key-cmp_cm").get_by_test_id("stPlotlyChart")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Top losses")).to_be_visible()
    _no_exception(page)
    expect(page.locator(".st-key-cmp_top_losses img").first).to_be_visible(timeout=60_000)  # 1 epoch: some mistakes
    snap(page, "inspect-02-compare-confusion.png")

    page.goto(f"{url}/inspect")
    wait_idle(page, 120_000)
    expect(page.locator(".st-key-inspect_separation")).to_contain_text("after training", timeout=120_000)
    _no_exception(page)
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2, timeout=60_000)  # before and after
    snap(page, "inspect-03-feature-space.png")
    page.get_by_role("tab", name="Feature maps").click()
    expect(page.locator(".st-key-inspect_maps img")).to_have_count(5, timeout=60_000)  # the input and 4 stages
    page.get_by_role("tab", name="Export").click()
    page.get_by_role("button", name="Build ONNX").click()
    expect(page.get_by_text("same top-1 for 100.0%")).to_be_visible(timeout=180_000)
    _no_exception(page)
    snap(page, "inspect-04-export.png")

    page.goto(url)
    wait_idle(page, 120_000)
    for key, option in (("backbone", "Small CNN"), ("strategy", "From scratch")):  # quick on a CPU
        page.locator(f".st-key-{key}").get_by_role("combobox").click()
        with rerun(page):
            page.get_by_role("option", name=option).first.click()
    size = page.locator(".st-key-image_size input")
    size.fill("32")
    with rerun(page):
        size.press("Enter")
    page.get_by_text("Find a learning rate (LR range test)").click()
    steps = page.locator(".st-key-lr_finder_steps input")
    steps.fill("30")
    with rerun(page):
        steps.press("Enter")
    use = page.locator(".st-key-lr_finder_use button")
    with rerun(page):
        page.get_by_role("button", name="Run the LR finder").click()
    expect(page.get_by_text("Trying learning rates in the background")).to_be_visible()  # a task: the page stays live
    expect(use).to_be_visible(timeout=240_000)  # the progress fragment reruns the page when the task ends
    suggested = use.inner_text().split("(")[1].rstrip(")")
    with rerun(page):
        use.click()
    _no_exception(page)
    lr_box = page.locator(".st-key-lr_scratch input")
    # The button shows while the full run that drew it is still going: a click then interrupts that run and
    # starts the click's own, and between the two the page reads 'not running' for a moment, which can end
    # the `rerun` wait before the click's run wrote the value (seen once at load 15: the default 0.002).
    # So wait on the value itself, as a person watching the box would.
    wait_for(lambda: float(lr_box.input_value()) == pytest.approx(float(suggested), rel=0.02, abs=5e-6), timeout=60)
    page.locator(".st-key-lr_finder_chart").scroll_into_view_if_needed()
    snap(page, "inspect-05-lr-finder.png")
