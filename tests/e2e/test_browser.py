"""The user's journey in a real browser: launch an experiment, watch it train, compare, predict.

Runs the real app (`streamlit run app.py`) with an empty run store and trains for real on the
bundled digits: the default experiment (Lite0, full fine-tuning, with its scratch twin) cut to one
epoch at 32 px, where transfer still beats scratch by about 0.4 (0.70-0.78 vs 0.31-0.35 over 3 seeds).
UI contract it relies on:
- Experiment page `/`: title "Transfer Learning Lab"; the number inputs `.st-key-epochs` and
  `.st-key-image_size`; the primary button inside `.st-key-launch` queues a transfer run and its
  scratch twin and switches to `/live` by itself.
- Live `/live`: `.st-key-live_status` names both runs with their status as text; plotly charts
  while training; it reads "finished" twice when both are done.
- Compare `/compare`: `.st-key-compare_table` holds an st.table with one row per run, a
  strategy column and a test-accuracy column; at least one plotly chart on the page.
- Predict `/predict`: a file uploader inside `.st-key-predict_upload`; `.st-key-predictions`
  then holds one st.table per model with the top-5 classes and their probabilities.
Screenshots 01..05 go to tests/e2e/screenshots/ (printed at start and in the summary).
Alone: `make test-e2e`, or `.venv/bin/python -m pytest tests/e2e -s`.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TRAIN_TIMEOUT_S = 360  # both runs of the default experiment, on 2 shared CPU cores
CURVES_TIMEOUT_S = 240  # first curve with two points: data + model load, then some steps
KNOWN_LABEL = 3  # the digit uploaded on the Predict page


# --- helpers ------------------------------------------------------------------------------

class Steps:
    """Prints each step with the time since the journey started (-s shows it live)."""

    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[e2e {time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)


def no_exception(page: Page) -> None:
    """No Streamlit error box on the page (a page that raised shows its traceback)."""
    exc = page.get_by_test_id("stException")
    if exc.count():
        pytest.fail(f"the page at {page.url} shows an exception:\n{exc.first.inner_text()}")


def read_table(table) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of an st.table: real DOM cells, the index column included."""
    data = table.locator("table").first.evaluate(
        """t => ({
            head: [...t.querySelectorAll('thead tr')].map(r => [...r.children].map(c => c.innerText.trim())),
            body: [...t.querySelectorAll('tbody tr')].map(r => [...r.children].map(c => c.innerText.trim())),
        })"""
    )
    header = data["head"][-1] if data["head"] else []
    return header, data["body"]


def column(header: list[str], *words: str) -> int:
    """Index of the first header cell containing every word (case-insensitive)."""
    for i, h in enumerate(header):
        if all(w in h.lower() for w in words):
            return i
    raise AssertionError(f"no column with {words!r} in the table header {header!r}")


def number(text: str) -> float:
    """'0.953', '95.3%', '95.3 %' -> float (percent kept as its number; compare like with like)."""
    m = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text.replace(",", ""))
    assert m, f"no number in table cell {text!r}"
    return float(m.group())


def digit_png(path, label: int, size: int = 64) -> int:
    """A real scikit-learn digit of `label`, upscaled, as the dataset encodes it (white on black)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = int(np.flatnonzero(d.target == label)[0])
    img = np.round(d.images[idx] * (255.0 / 16.0)).astype(np.uint8)
    Image.fromarray(img, mode="L").resize((size, size), Image.BILINEAR).save(path)
    return idx


# --- the journey --------------------------------------------------------------------------

def test_user_journey(page: Page, app_url: str, wait_idle, rerun, snap, app_server, tmp_path):
    step = Steps()

    # a. Experiment page
    step(f"open {app_url}/")
    page.goto(f"{app_url}/")
    wait_idle(page)
    expect(page.locator("h1", has_text="Transfer Learning Lab").first).to_be_visible()
    no_exception(page)
    snap(page, "01-experiment.png")
    step("a. experiment page rendered: 01-experiment.png")

    # b. The default experiment, one epoch at 32 px; Launch: the app switches to Live by itself
    for key, value in (("epochs", "1"), ("image_size", "32")):
        box = page.locator(f".st-key-{key} input")
        box.fill(value)
        with rerun(page):
            box.press("Enter")
    expect(page.get_by_text("1 epoch(s) at 32 px")).to_be_visible()
    launch = page.locator(".st-key-launch").get_by_test_id("stBaseButton-primary")
    expect(launch).to_be_visible()
    launch.click()
    expect(page).to_have_url(re.compile(r"/live/?(\?.*)?$"), timeout=60_000)
    step(f"b. launched; now at {page.url}")

    # c. Live: both runs listed, curves while training, both finished at the end
    status = page.locator(".st-key-live_status")
    expect(status).to_be_visible(timeout=60_000)
    expect(status).to_contain_text(re.compile("scratch", re.I), timeout=60_000)
    expect(status).to_contain_text(re.compile(r"queued|running|finished", re.I), timeout=60_000)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=180_000)
    # Real curves, not the "No data yet" placeholder: an SVG line of two points or more.
    page.wait_for_function(
        """() => [...document.querySelectorAll("[data-testid='stPlotlyChart'] path.js-line")]
                 .some(p => (p.getAttribute('d') || '').includes('L'))""",
        timeout=CURVES_TIMEOUT_S * 1000, polling=500)
    no_exception(page)
    mid_status = status.inner_text()
    snap(page, "02-live.png")
    step(f"c. curves drawn: 02-live.png; status now: {' '.join(mid_status.split())}")

    both_finished = re.compile(r"finished[\s\S]*finished", re.I)
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while True:
        try:
            expect(status).to_contain_text(both_finished, timeout=10_000)
            break
        except AssertionError:
            text = status.inner_text() if status.count() else "(status container gone)"
            if re.search(r"\b(failed|interrupted|cancelled|error)\b", text, re.I):
                log = (app_server.home / "worker.log")
                tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no worker.log)"
                pytest.fail(f"a run did not finish:\n{text}\n--- worker.log ---\n{tail}")
            if time.monotonic() > deadline:
                pytest.fail(f"runs not both finished after {TRAIN_TIMEOUT_S}s; status:\n{text}")
            no_exception(page)
    # The fragment saw the runs end; the full rerun it starts on any status change redraws the
    # run picker's chips too (a chip once stayed "— queued" after its run ended).
    expect(page.locator(".st-key-live_pick")).not_to_contain_text(re.compile(r"— (running|queued)"), timeout=60_000)
    expect(status.get_by_test_id("stButton")).to_have_count(0, timeout=60_000)  # no Stop left for an ended run
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    snap(page, "03-live-done.png")
    step(f"c. both runs finished: 03-live-done.png; status: {' '.join(status.inner_text().split())}")

    # d. Compare: one table row per run; transfer beats scratch on test accuracy
    page.goto(f"{app_url}/compare")
    wait_idle(page)
    no_exception(page)
    table = page.locator(".st-key-compare_table").get_by_test_id("stTable").first
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    snap(page, "04-compare.png")
    header, rows = read_table(table)
    step(f"d. compare table: {header} {rows}: 04-compare.png")
    strat, acc = column(header, "strategy"), column(header, "test", "acc")
    scratch = [r for r in rows if r[strat].strip().lower() == "scratch"]
    transfer = [r for r in rows if r[strat].strip().lower() != "scratch"]
    assert len(scratch) == 1 and len(transfer) == 1, f"want one scratch and one transfer run: {rows}"
    t_acc, s_acc = number(transfer[0][acc]), number(scratch[0][acc])
    step(f"d. test accuracy: transfer ({transfer[0][strat]}) {t_acc} vs scratch {s_acc}")
    assert t_acc > s_acc, f"transfer {t_acc} is not above scratch {s_acc}: {header} {rows}"

    # e. Predict: upload a real digit, a top-5 table per model
    png = tmp_path / f"digit-{KNOWN_LABEL}.png"
    idx = digit_png(png, KNOWN_LABEL)
    page.goto(f"{app_url}/predict")
    wait_idle(page)
    no_exception(page)
    page.locator(".st-key-predict_upload").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(png))
    tables = page.locator(".st-key-predictions").get_by_test_id("stTable")
    expect(tables).to_have_count(2, timeout=120_000)
    for i in range(2):
        expect(tables.nth(i).locator("tbody tr")).to_have_count(5)
    wait_idle(page)
    no_exception(page)
    snap(page, "05-predict.png")
    top5 = []
    for i in range(2):
        header, rows = read_table(tables.nth(i))
        cls = column(header, "class") if any("class" in h.lower() for h in header) else column(header, "label")
        prob = column(header, "prob")
        names = [r[cls] for r in rows]
        probs = [number(r[prob]) for r in rows]
        if max(probs) > 1:  # shown in percent
            probs = [p / 100 for p in probs]
        assert set(names) <= {str(k) for k in range(10)} and len(set(names)) == 5, f"top-5 classes {names}"
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1.001, f"probabilities {probs}"
        assert probs == sorted(probs, reverse=True), f"top-5 not in order: {probs}"
        top5.append(names)
        step(f"e. model {i + 1}: top-5 {list(zip(names, probs))}")
    assert any(str(KNOWN_LABEL) in names for names in top5), \
        f"digit {KNOWN_LABEL} (load_digits()[{idx}]) in neither model's top 5: {top5}"
    step("e. predictions shown: 05-predict.png")
