"""The training recipe in a real browser: strong augmentation and its preview grid (re-drawn on a
click), a launch with early stopping on a folder whose labels carry no signal, and the Live page
saying "stopped early". Screenshots recipe-01..03 go to the e2e screenshots folder."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from helpers import image_folder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _no_exception(page: Page) -> None:
    exc = page.get_by_test_id("stException")
    if exc.count():
        pytest.fail(f"the page at {page.url} shows an exception:\n{exc.first.inner_text()}")


def _fill(page: Page, rerun, key: str, value: str) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(value)
    with rerun(page):
        box.press("Enter")


def _choose(page: Page, rerun, key: str, option: str) -> None:
    box = page.locator(f".st-key-{key}").get_by_role("combobox")
    box.scroll_into_view_if_needed()
    box.click()
    box.press_sequentially(option)  # the select box filters its options as a person types
    with rerun(page):
        page.get_by_role("option", name=re.compile(f"^{re.escape(option)}")).first.click()


def test_strong_augmentation_preview_then_early_stopping_on_live(page: Page, app_url: str, wait_idle, rerun, snap,
                                                                 app_server):
    # Random-noise images with random labels, inside the app's data folder: validation loss can only wander or climb.
    folder = image_folder(app_server.home / "datasets" / "noise", {"a": 60, "b": 60}).removeprefix("folder:")
    page.goto(app_url)
    wait_idle(page, 120_000)
    for key, option in (("backbone", "MLP"), ("strategy", "From scratch"), ("dataset", "Your images: a folder")):
        _choose(page, rerun, key, option)
    _fill(page, rerun, "folder_path", folder)
    expect(page.get_by_text("120 images in 2 classes")).to_be_visible(timeout=60_000)
    for key, value in (("epochs", "15"), ("image_size", "16"), ("batch_size", "16"), ("lr_scratch", "0.01")):
        _fill(page, rerun, key, value)

    _choose(page, rerun, "augment", "strong")
    grid = page.locator(".st-key-augment_preview")
    expect(grid.locator("img")).to_have_count(16, timeout=60_000)  # 8 images as stored, the same 8 augmented
    expect(grid).to_contain_text("TrivialAugment")
    expect(grid).to_contain_text("draw 1")
    first = [grid.locator("img").nth(i).get_attribute("src") for i in range(8, 16)]
    grid.scroll_into_view_if_needed()
    snap(page, "recipe-01-augmentation-preview.png")
    with rerun(page):
        page.locator(".st-key-augment_redraw button").click()
    expect(grid).to_contain_text("draw 2")
    again = [grid.locator("img").nth(i).get_attribute("src") for i in range(8, 16)]
    assert again != first, "Re-draw showed the same augmented images"
    snap(page, "recipe-02-augmentation-redrawn.png")

    _fill(page, rerun, "patience", "2")
    _no_exception(page)
    launch = page.locator(".st-key-launch").get_by_test_id("stBaseButton-primary")
    expect(launch).to_be_enabled()
    launch.click()
    expect(page).to_have_url(re.compile(r"/live/?(\?.*)?$"), timeout=60_000)
    status = page.locator(".st-key-live_status")
    expect(status).to_contain_text(re.compile(r"finished: stopped early at epoch \d+ \(best \d+\)"), timeout=300_000)
    expect(status).to_contain_text("scored with epoch")
    _no_exception(page)
    snap(page, "recipe-03-live-stopped-early.png")
