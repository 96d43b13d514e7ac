"""Load, with real processes: two app servers on one data folder, five browser
sessions watching (one of them launching from the Experiment page), five
launcher processes queueing ten tiny runs at once.
One app is restarted mid-run. Every run finishes, every page shows the same
truth, and "database is locked" never reaches a person. Also: the shipped config listens on loopback only with
XSRF on, and hostile run names show as typed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from helpers import NONET, ROOT

N_LAUNCHERS, RUNS_EACH = 5, 2  # five processes queueing at once is the load on the store
N_RUNS = N_LAUNCHERS * RUNS_EACH
FINISH_TIMEOUT_S = 300
HOSTILE = "**bold** [link](https://evil.example/x) <b>tag</b>"
LAUNCHER = """
import json, sys
from core.runs import jobs
from core.train.config import RunConfig
dataset, who = sys.argv[1], int(sys.argv[2])
cfgs = [RunConfig(backbone="small_cnn", strategy="scratch", dataset=dataset, epochs=1, image_size=16, device="cpu",
                  seed=k, name={hostile!r} if k == {each} - 1 else f"load {{who}}-{{k}}") for k in range({each})]
group, ids = jobs.launch_group(cfgs)  # what the Experiment page's Launch button calls
print(json.dumps(ids))
""".format(each=RUNS_EACH, hostile=HOSTILE)
LOCKED = re.compile(r"database is locked|database table is locked", re.I)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (IPv4 and IPv6), from /proc."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr, p = f[1].split(":")
            if int(p, 16) == port and f[3] == "0A":  # 0A: LISTEN
                if width == 8:
                    found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
                else:
                    found.add("::1" if addr == "0" * 24 + "01000000" else ("::" if set(addr) == {"0"} else addr))
    return found


T0 = [0.0]


def mark(what: str) -> None:
    print(f"[load] {time.monotonic() - T0[0]:6.1f}s {what}", flush=True)


def tiny_zip(path: Path) -> Path:
    import io
    import zipfile

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(6):
                buf = io.BytesIO()
                Image.new("RGB", (8, 8), tuple(min(255, c + 5 * i) for c in colour)).save(buf, "PNG")
                zf.writestr(f"{name}/{i}.png", buf.getvalue())
    return path


def open_live(page, url: str) -> None:
    """Live, loaded: its status list or its 'No runs yet' (a page with a run_every fragment
    flips its script state on every tick, so wait on content, not on idleness)."""
    page.goto(f"{url}/live")
    page.wait_for_selector("[data-testid='stAppViewContainer']")
    page.locator(".st-key-live_status").or_(page.get_by_text("No runs yet")).first.wait_for()


def status_text(page) -> str:
    box = page.locator(".st-key-live_status")
    return box.inner_text() if box.count() else ""


@pytest.fixture
def sessions(browser, new_context, screenshots, request):
    """`sessions(n)`: n browser sessions (contexts), each with one page; every page is photographed if the
    test fails, and every context is closed when it ends (no page left polling a server)."""
    opened = []

    def open_(n: int):
        for _ in range(n):
            context = new_context(browser, viewport={"width": 1300, "height": 900})
            context.set_default_timeout(60_000)
            opened.append((context, context.new_page()))
        return [pg for _, pg in opened]

    yield open_
    rep = getattr(request.node, "rep_call", None)
    for i, (context, pg) in enumerate(opened):
        if rep is not None and rep.failed:
            try:
                pg.screenshot(path=str(screenshots / f"failure-load-session-{i}.png"))
            except Exception as e:  # a crashed page must not hide the real failure
                print(f"[load] no failure screenshot of session {i}: {e}", flush=True)
        context.close()


def test_two_apps_five_sessions_ten_runs_one_truth(more_apps, sessions, snap, wait_idle, rerun, tmp_path):
    T0[0] = time.monotonic()
    home = tmp_path / "tlab"
    apps = [more_apps(home, "app-a"), more_apps(home, "app-b", shipped_address=True)]
    for app in apps:
        app.wait_healthy()
    mark("both apps healthy")

    # Exposure: the shipped config listens on loopback only; uploads without the XSRF token are refused.
    port_b = int(apps[1].url.rsplit(":", 1)[1])
    assert listening_addresses(port_b) == {"127.0.0.1"}
    req = urllib.request.Request(f"{apps[1].url}/_stcore/upload_file/s/f", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403

    # Five people, three on one app process and two on the other, open Live before anything runs.
    pages = sessions(5)
    urls = [apps[i % 2].url for i in range(5)]
    for page, url in zip(pages, urls):
        page.goto(f"{url}/live")
        wait_idle(page)
        expect(page.get_by_text("No runs yet")).to_be_visible()
    mark("five sessions on Live")

    # One person launches from the Experiment page (a tiny run: Small CNN from scratch, 1 epoch at 16 px, 40
    # labels per class); the app switches that session to Live, where it watches its run.
    ui = pages[0]
    ui.goto(f"{urls[0]}/")
    wait_idle(ui)
    for key, option in (("backbone", "Small CNN"), ("strategy", "From scratch")):
        ui.locator(f".st-key-{key}").get_by_role("combobox").click()
        with rerun(ui):
            ui.get_by_role("option", name=re.compile(f"^{option}")).first.click()
    for key, value in (("epochs", "1"), ("image_size", "16"), ("labels_per_class", "40")):
        ui.locator(f".st-key-{key} input").fill(value)
        with rerun(ui):
            ui.locator(f".st-key-{key} input").press("Enter")
    expect(ui.get_by_text("From scratch of Small CNN", exact=False)).to_be_visible()
    ui.locator(".st-key-launch").get_by_test_id("stBaseButton-primary").click()
    expect(ui).to_have_url(re.compile(r"/live/?(\?.*)?$"))
    expect(ui.locator(".st-key-live_status")).to_contain_text("small_cnn")
    mark("one session launched from the Experiment page")

    # Five processes queue a group of four runs each, all at once; each starts workers if none is alive.
    # The runs are tiny (small_cnn, 16 px, 12 images, one step): the load is on the store and the pages.
    env = {**os.environ, "TLAB_HOME": str(home), "TORCH_HOME": str(home.parent / "torch_home"),
           "PYTHONPATH": os.pathsep.join([str(NONET), str(ROOT)])}
    dataset = f"folder:{tiny_zip(home / 'datasets' / 'tiny.zip')}"
    launchers = [subprocess.Popen([sys.executable, "-c", LAUNCHER, dataset, str(i)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(N_LAUNCHERS)]
    # Meanwhile the sessions look again (a reload is a new session with the newest group preselected).
    for page, url in zip(pages, urls):
        open_live(page, url)
        assert not LOCKED.search(page.inner_text("body"))
    mark("sessions looked again while launching")
    ids = []
    for p in launchers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert not LOCKED.search(err)
        ids += json.loads(out)
    assert len(set(ids)) == N_RUNS

    # The second app is restarted mid-run (stopped, started again on the same data folder):
    # training lives in the worker, so nothing is lost, and its sessions reconnect to the new one.
    stopped = apps[1]
    stopped.stop(workers=False)
    apps[1] = more_apps(home, "app-b-restarted", shipped_address=True)
    apps[1].wait_healthy()
    urls = [apps[i % 2].url for i in range(5)]
    mark("second app restarted")

    # Every session watches the newest group (each reload preselects it) until the queue is empty.
    for page, url in zip(pages, urls):
        open_live(page, url)
    mark("sessions reloaded to watch the newest group")
    from core.runs.store import Store

    store = Store(home / "tlab.sqlite", recover=False)
    newest = store.runs().sort_values("created").iloc[-1]["group_id"]
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    texts = {}
    for i, page in enumerate(pages):
        while True:
            text = status_text(page)
            assert not LOCKED.search(page.inner_text("body")), text
            assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").first.inner_text()
            if text.count("— finished") == RUNS_EACH:
                break
            if re.search(r"— (failed|interrupted|cancelled)", text) or time.monotonic() > deadline:
                log = home / "worker.log"
                pytest.fail(f"session {i}: the newest group did not finish:\n{text}\n--- worker.log ---\n"
                            + (log.read_text(errors="replace")[-3000:] if log.exists() else "(none)"))
            page.wait_for_timeout(1000)
        mark(f"session {i} sees its runs finished")
        texts[i] = sorted(line for line in text.splitlines() if "— finished" in line)
        if i == 0:
            snap(page, "load-01-live-finished.png")
    assert all(t == texts[0] for t in texts.values())  # the same truth on both app processes
    runs = store.runs()
    assert len(runs) == N_RUNS + 1 and set(runs["status"]) == {"finished"}, runs[["id", "status", "reason"]]
    shown = {m for line in texts[0] for m in re.findall(r"\(([0-9a-f]{6})\) — finished", line)}
    assert shown == {i[-6:] for i in runs[runs["group_id"] == newest]["id"]}  # the pages show what the store holds

    # A hostile run name shows as typed: no bold, no link, no tag of its own.
    live = pages[0].locator(".st-key-live_status")
    assert HOSTILE in live.inner_text().replace("\u2060", "")  # an invisible word joiner keeps the URL unlinked
    assert live.locator("a").count() == 0 and live.locator("b, img, h1, h2, h3, li").count() == 0

    # Compare on each app process: the same table of the newest group, finished.
    tables = []
    for page, url in zip(pages[:2], urls[:2]):
        page.goto(f"{url}/compare")
        wait_idle(page)
        table = page.locator(".st-key-compare_table").get_by_test_id("stTable").first
        expect(table.locator("tbody tr")).to_have_count(RUNS_EACH)
        tables.append(table.inner_text())
        assert not LOCKED.search(page.inner_text("body"))
        assert table.locator("a, strong, b, img").count() == 0  # st.table renders markdown: names are escaped
        assert HOSTILE in table.inner_text().replace("\u2060", "")
    snap(pages[1], "load-02-compare-other-app.png")
    assert tables[0] == tables[1] and tables[0].count("finished") == RUNS_EACH

    mark("compare pages agree")
    logs = [a.log.read_text(errors="replace") for a in (*apps, stopped)] + [(home / "worker.log").read_text(errors="replace")]
    assert not any(LOCKED.search(text) for text in logs)
