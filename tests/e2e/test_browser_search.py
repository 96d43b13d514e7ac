"""A hyperparameter search seen in a real browser: a recorded four-trial study (one pruned) in the
app's data folder, as `tune` leaves it (the real search is tests/runs/test_tune.py's claim), then
Compare draws it with Optuna's figures and the best-trial box. Screenshot search-01 goes to the
screenshots folder."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from e2e.test_browser_lessons import no_exception
from helpers import recorded_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def study(app_server, monkeypatch):
    """The recorded study in the shared app's data folder, removed after (runs and journal)."""
    monkeypatch.setenv("TLAB_HOME", str(app_server.home))
    from core.runs import tune
    from core.runs.store import Store

    runs = recorded_study("e2e")
    yield runs
    store = Store()
    for run_id in runs.values():
        store.delete_run(run_id)
    store.close()
    tune.journal_path("e2e").unlink()


def test_compare_draws_a_search_study(app_server, study, page, snap, wait_idle):
    runs = study
    page.goto(f"{app_server.url}/compare")
    wait_idle(page)
    no_exception(page)
    expect(page.get_by_text("Search 'e2e': 4 trials")).to_be_visible()
    expect(page.get_by_text("3 complete, 1 pruned")).to_be_visible()
    best = page.locator(".st-key-compare_best_trial")
    expect(best).to_contain_text("Best trial: 1")
    expect(best).to_contain_text(runs[1])
    for title in ("Best validation accuracy so far", "Which settings mattered", "Settings of every finished trial",
                  "Validation accuracy per epoch"):
        expect(page.get_by_test_id("stPlotlyChart").filter(has_text=title)).to_have_count(1)
    # The pruned trial's curve is drawn and stops after its one epoch: four trial curves on the chart.
    curves = page.get_by_test_id("stPlotlyChart").filter(has_text="pruned trials stop early")
    expect(curves.locator("path.js-line")).to_have_count(4)
    snap(page, "search-01-compare.png")
