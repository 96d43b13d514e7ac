"""A person's own large folder of photos in a real browser: refused with the
exact command to run, allowed by that command while the app runs (no
restart), then counts and sample images at once, and the decode at the
form's image size with its progress bar. Screenshots folder-01..04 go to the
e2e screenshots folder."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from helpers import photos_folder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
N = 3000  # all 1024x768, 100 distinct pictures: the rest are copies, each decoded on its own


@pytest.fixture
def photos(app_server, monkeypatch):
    """3,000 photos in 10 class folders (and 3 broken files), outside every
    folder the app may read; what the test allows is removed at the end."""
    monkeypatch.setenv("TLAB_HOME", str(app_server.home))
    root = Path(tempfile.mkdtemp(prefix="tlab-e2e-photos-")) / "my photos"
    photos_folder(root, N, large_every=1, distinct=100, processes=2)
    yield root
    from core import paths

    paths.write_recorded_roots([r for r in paths.recorded_roots() if r.resolve() != root.resolve()])
    shutil.rmtree(root.parent, ignore_errors=True)


def _choose(page: Page, rerun, key: str, option: str) -> None:
    box = page.locator(f".st-key-{key}").get_by_role("combobox")
    box.click()
    box.press_sequentially(option)
    with rerun(page):
        page.get_by_role("option", name=re.compile(f"^{re.escape(option)}")).first.click()


def _fill(page: Page, rerun, key: str, value: str) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(value)
    with rerun(page):
        box.press("Enter")


def test_a_large_folder_allowed_from_the_cli_previews_at_once_then_decodes_with_progress(
        page: Page, app_url: str, photos: Path, wait_idle, rerun, snap):
    from core.cli.main import main as cli_main

    page.goto(app_url)
    wait_idle(page, 120_000)
    _choose(page, rerun, "dataset", "Your images: a folder")
    _fill(page, rerun, "folder_path", str(photos))
    refusal = page.get_by_test_id("stAlertContentError").filter(has_text="outside the folders")
    expect(refusal).to_contain_text(f"python -m core allow '{photos}'")  # the exact command, quoted for a shell
    snap(page, "folder-01-refused-with-the-command.png")

    assert cli_main(["allow", str(photos)]) == 0  # in a terminal, while the app runs
    start = time.monotonic()
    _fill(page, rerun, "folder_path", f"{photos}/")  # the same folder, typed again
    expect(page.get_by_text(f"{N + 3:,} images in 10 classes")).to_be_visible()
    print(f"[e2e] preview of {N + 3:,} files shown {time.monotonic() - start:.1f} s after Enter (whole page rerun)")
    expect(page.get_by_text("3 unreadable file(s) skipped, e.g. class_0/Broken_0.jpg")).to_be_visible()
    preview = page.get_by_test_id("stExpander").filter(has_text="a few images per class")
    expect(preview.locator("img")).to_have_count(80)  # 8 of each class, decoded alone
    expect(page.get_by_text("Not decoded at 64 px yet")).to_be_visible()
    snap(page, "folder-02-counts-and-samples.png")

    _fill(page, rerun, "image_size", "128")  # fewer photos shrink at decode: a longer decode to watch
    button = page.locator(".st-key-folder_decode button")
    expect(button).to_have_text(f"Decode the {N + 3:,} images at 128 px now")
    button.click()
    bar = page.get_by_test_id("stProgress")
    expect(bar).to_contain_text(re.compile(rf"Decoding [\d,]+ / {N + 3:,} images on every core"), timeout=60_000)
    bar.scroll_into_view_if_needed()
    snap(page, "folder-03-decode-progress.png")
    expect(page.get_by_text("Decoded at 128 px: runs start from the data folder's copy.")).to_be_visible(timeout=120_000)
    expect(page.get_by_text(re.compile(r"3 unreadable file\(s\) skipped: class_0/Broken_0\.jpg"))).to_be_visible()
    expect(bar).to_have_count(0)
    snap(page, "folder-04-decoded.png")
