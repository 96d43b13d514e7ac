"""The Storage page in a real browser: sizes by kind, a group deleted after a
confirmation that names the space it frees, and the freed size shown after.
Screenshots storage-01..03 go to tests/e2e/screenshots/."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MB = 2**20


@pytest.fixture
def two_groups(app_server, monkeypatch):
    """Two ended runs of 1.5 MB each in one group, one run in another, in the app's data folder."""
    monkeypatch.setenv("TLAB_HOME", str(app_server.home))
    from core import paths
    from core.runs.store import Store

    store = Store()
    made = {}
    for group, sizes in (("g-e2e-old", (1.5, 1.5)), ("g-e2e-keep", (1.0,))):
        for i, mb in enumerate(sizes):
            run_id = store.add_run("{}", name=f"{group} #{i}", group_id=group, status="finished")
            paths.run_dir(run_id).mkdir(parents=True)
            (paths.run_dir(run_id) / "checkpoint.pt").write_bytes(b"w" * int(mb * MB))
            made.setdefault(group, []).append(paths.run_dir(run_id))
    yield made
    for group in made:  # leave the shared app's data folder as it was
        for row in store.query("SELECT id FROM runs WHERE group_id = ?", (group,)):
            store.delete_run(row["id"])
    store.close()


def test_storage_view_deletes_a_group_and_shows_the_space_freed(app_server, two_groups, page, snap, wait_idle, rerun):
    page.goto(f"{app_server.url}/storage")
    wait_idle(page, 120_000)
    expect(page.locator(".st-key-storage_kinds")).to_contain_text("runs")
    expect(page.locator(".st-key-storage_runs")).to_contain_text("g-e2e-old")
    snap(page, "storage-01-sizes.png")

    group = page.locator(".st-key-storage_group")
    group.get_by_role("combobox").click()
    page.keyboard.type("g-e2e-old")  # the other browser tests' runs may share this data folder
    page.keyboard.press("Enter")  # no rerun when it was already chosen (the largest group comes first)
    expect(group.get_by_role("combobox")).to_have_value("g-e2e-old (2 run(s), 3.0 MB)")
    expect(page.locator("[data-testid='stApp'][data-test-script-state='notRunning']")).to_be_attached()
    with rerun(page):
        page.locator(".st-key-storage_delete button").click()
    confirm = page.locator(".st-key-storage_confirm")
    expect(confirm).to_contain_text("Delete 2 run(s) and their folders, freeing 3.0 MB")
    expect(confirm).to_contain_text("g-e2e-old #1")
    snap(page, "storage-02-confirm.png")

    with rerun(page):
        page.locator(".st-key-storage_yes button").click()
    expect(page.get_by_text("Deleted 2 run(s), freed 3.0 MB.")).to_be_visible()
    assert not any(p.exists() for p in two_groups["g-e2e-old"]) and all(p.exists() for p in two_groups["g-e2e-keep"])
    expect(page.locator(".st-key-storage_runs")).not_to_contain_text("g-e2e-old")
    assert not page.get_by_test_id("stException").count()
    snap(page, "storage-03-freed.png")
