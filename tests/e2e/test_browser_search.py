"""A hyperparameter search seen in a real browser: a real three-trial study (tiny runs,
through the CLI into the app's data folder), then Compare draws it with Optuna's figures
and the best-trial box. Screenshot search-01 goes to the screenshots folder."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from e2e.test_browser_lessons import core, no_exception

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_compare_draws_a_search_study(app_server, page, snap, wait_idle):
    out = json.loads(core(app_server.home, "tune", "--study", "e2e", "--trials", "3", "--strategies", "scratch",
                          "--backbone", "small_cnn", "--dataset", "digits", "--image-size", "16",
                          "--labels-per-class", "10", "--epochs", "2", "--device", "cpu", "--json"))
    assert out["trials"] == 3 and out["best"] is not None
    page.goto(f"{app_server.url}/compare")
    wait_idle(page)
    no_exception(page)
    expect(page.get_by_text("Search 'e2e': 3 trials")).to_be_visible()
    best = page.locator(".st-key-compare_best_trial")
    expect(best).to_contain_text(f"Best trial: {out['best']['trial']}")
    expect(best).to_contain_text(out["best"]["run_id"])
    for title in ("Best validation accuracy so far", "Which settings mattered", "Settings of every finished trial",
                  "Validation accuracy per epoch"):
        expect(page.get_by_test_id("stPlotlyChart").filter(has_text=title)).to_have_count(1)
    snap(page, "search-01-compare.png")
