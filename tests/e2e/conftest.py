"""Browser test fixtures: the real app under `streamlit run`, driven by Debian's chromium.

Fixtures
- `more_apps` (function): a factory for further app servers (e.g. two on one data folder).
- `app_server` (package: it stops when the last browser test ends): starts `python -m streamlit run app.py` on a free loopback port with
  an empty data folder ($TLAB_HOME) and an empty torch hub cache ($TORCH_HOME), the network
  blocked (tests/nonet on PYTHONPATH); yields an `AppServer` (`.url`, `.home`, `.log`). At the
  end it stops the server and every worker process that training started.
- `app_url` (package): the server's base URL, no trailing slash.
- `browser` (package): Playwright (sync API) launching `/usr/bin/chromium` headless.
- `page` (function): a fresh 1400x900 page; a screenshot is saved if the test fails.
- `screenshots` (session): the folder screenshots go to (printed, and named in the summary);
  `snap` (session): `snap(page, name)` saves a full-height screenshot there.
- `wait_idle` (session): the helper `wait_idle(page)`: a script run has ended since the last call
  (or the page load) and none is in progress; `new_context` (package): `new_context(browser, **kw)`, a
  context whose pages count their script runs, which `wait_idle` needs (the `page` fixture has one);
  `rerun` (session): `with rerun(page): <action>` waits for the run that action causes.

The browser is Debian's package (`make install-browser`); never `playwright install`.
Set TLAB_E2E_CHROMIUM to use another binary, TLAB_E2E_SCREENSHOTS for another folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NONET = ROOT / "tests" / "nonet"
CHROMIUM = os.environ.get("TLAB_E2E_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("TLAB_E2E_SCREENSHOTS") or Path(__file__).resolve().parent / "screenshots")
STARTUP_TIMEOUT_S = 60
FIRST_RUN_TIMEOUT_S = 180  # a fresh server's first script run, which imports the engine (see warm_up)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: real-browser end-to-end test (starts the app, trains for real)")


HERE = Path(__file__).resolve().parent


# Two groups of browser tests, each run by one pytest-xdist worker with its own app server and browser
# (the app_server fixture is per worker), of about the same length (ci8's durations, 2 cores: 7-8 min
# each). The load test starts its own two servers; its group's shared server sits idle meanwhile.
GROUPS = {
    "test_browser.py": "e2e-a", "test_browser_inspect.py": "e2e-a", "test_browser_search.py": "e2e-a",
    "test_browser_storage.py": "e2e-a", "test_browser_recipe.py": "e2e-a", "test_browser_folder.py": "e2e-a",
    "test_browser_load.py": "e2e-b", "test_browser_lessons.py": "e2e-b", "test_browser_tools.py": "e2e-b",
    "test_browser_timm.py": "e2e-b",
}


def pytest_collection_modifyitems(config, items):
    """Every browser test is e2e and slow, and in one of two xdist groups (GROUPS; a new file goes to
    e2e-a unless named there): the tests of a group run in one worker, one after another, on that
    worker's app server, so that server and its browser start once per group."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if HERE in path.parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group(GROUPS.get(path.name, "e2e-a")))


_used = False  # the screenshots fixture ran in this session (not just a collection)


def pytest_terminal_summary(terminalreporter):
    if _used and SCREENSHOTS.is_dir() and any(SCREENSHOTS.iterdir()):
        terminalreporter.write_sep("-", "e2e artifacts")
        terminalreporter.write_line(f"screenshots and logs: {SCREENSHOTS}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)  # lets `page` know whether the test failed
    return report


# --- the app server -----------------------------------------------------------------------

@dataclass
class AppServer:
    url: str
    home: Path
    log: Path
    proc: subprocess.Popen

    def wait_healthy(self) -> float:
        return wait_healthy(self)

    def stop(self, workers: bool = True) -> None:
        """Stop the server (and, unless told not to, the workers training on its data folder)."""
        stop_app(self, workers)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().decode(errors="replace").strip()
    except OSError:
        return None


def _pids_with_env(name: str, value: str) -> list[int]:
    """Processes (ours) whose environment holds NAME=VALUE exactly: the detached workers."""
    needle = f"{name}={value}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                found.append(int(d.name))
        except OSError:  # gone, or not ours
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop_pids(pids: list[int], grace_s: float = 10) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        if not any(_alive(p) for p in pids):
            return


@pytest.fixture(scope="session")
def screenshots() -> Path:
    global _used
    _used = True
    if SCREENSHOTS.is_dir():  # only this session's pictures: no stale ones from an older run
        for f in SCREENSHOTS.iterdir():
            if f.is_file():
                f.unlink()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\n[e2e] screenshots and logs go to {SCREENSHOTS}", flush=True)
    return SCREENSHOTS


def start_app(home: Path, log: Path, shipped_address: bool = False) -> AppServer:
    """`streamlit run app.py` on a free loopback port over the data folder `home`, the network
    blocked; returns once it is healthy. `shipped_address`: no --server.address flag, so the
    address comes from .streamlit/config.toml as with `make run`."""
    torch_home = home.parent / "torch_home"
    home.mkdir(parents=True, exist_ok=True)
    torch_home.mkdir(exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TLAB_HOME": str(home), "TORCH_HOME": str(torch_home),
           "PYTHONPATH": os.pathsep.join([str(NONET), str(ROOT)]), "PYTHONUNBUFFERED": "1",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py",
           "--server.headless", "true", "--server.port", str(port),
           *([] if shipped_address else ["--server.address", "127.0.0.1"]),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return AppServer(url=url, home=home, log=log, proc=proc)


def wait_healthy(server: AppServer) -> float:
    """Seconds until the server answered its health check (fails the test if it never does)."""
    t0 = time.monotonic()
    while _health(server.url) != "ok":
        if server.proc.poll() is not None:
            pytest.fail(f"streamlit exited with {server.proc.returncode} before it was healthy:\n{server.log_tail()}")
        if time.monotonic() - t0 > STARTUP_TIMEOUT_S:
            pytest.fail(f"streamlit not healthy after {STARTUP_TIMEOUT_S}s at {server.url}:\n{server.log_tail()}")
        time.sleep(0.25)
    return time.monotonic() - t0


def stop_app(server: AppServer, workers: bool = True) -> None:
    """Stop the server and every worker process that training started on its data folder
    (`workers=False`: only the server, as when a person restarts the app mid-run)."""
    proc = server.proc
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and anything it forked
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    if not workers:
        return
    # Workers are detached (own session) but inherit TLAB_HOME: find them by it.
    leftover = _pids_with_env("TLAB_HOME", str(server.home))
    if leftover:
        print(f"\n[e2e] stopping {len(leftover)} leftover process(es) of the app: {leftover}", flush=True)
        _stop_pids(leftover)


def warm_up(server: AppServer, browser) -> float:
    """Seconds until the server's first script run has ended: the first session of a fresh server imports
    the engine (torch, torchvision, timm: 5-6 s on idle cores, well over a minute on a loaded 2-core
    machine); later sessions reuse those imports. Part of starting the shared server, not of a test."""
    t0 = time.monotonic()
    context = new_context(browser)
    try:
        pg = context.new_page()
        pg.goto(server.url)
        _settle(pg, 0, FIRST_RUN_TIMEOUT_S * 1000)
    finally:
        context.close()
    return time.monotonic() - t0


@pytest.fixture(scope="package")
def app_server(screenshots, browser) -> AppServer:
    tmp = Path(tempfile.mkdtemp(prefix="tlab-e2e-"))
    server = start_app(tmp / "tlab", tmp / "server.log")
    try:
        print(f"[e2e] app up at {server.url} in {wait_healthy(server):.1f}s (TLAB_HOME={server.home}); "
              f"first run in {warm_up(server, browser):.1f}s", flush=True)
        yield server
    finally:
        stop_app(server)
        for name in ("server.log",):
            shutil.copy(tmp / name, screenshots / name)
        if (server.home / "worker.log").exists():
            shutil.copy(server.home / "worker.log", screenshots / "worker.log")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def more_apps(screenshots, tmp_path):
    """`more_apps(home, name, shipped_address=False)`: another app server over `home`, started
    (call `.wait_healthy()` on it before use; start several first to boot them in parallel);
    several may share one data folder. All stop when the test ends;
    their logs are copied next to the screenshots as `<name>.log`."""
    started: list[tuple[str, AppServer]] = []

    def start(home: Path, name: str, shipped_address: bool = False) -> AppServer:
        server = start_app(home, tmp_path / f"{name}.log", shipped_address)
        started.append((name, server))
        return server

    try:
        yield start
    finally:
        for name, server in started:
            stop_app(server)
            shutil.copy(server.log, screenshots / f"{name}.log")


@pytest.fixture(scope="package")
def app_url(app_server) -> str:
    return app_server.url


# --- the browser --------------------------------------------------------------------------

@pytest.fixture(scope="package")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `make install-browser` (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        print(f"[e2e] chromium {b.version} up in {time.monotonic() - t0:.1f}s", flush=True)
        try:
            yield b
        finally:
            b.close()


# Streamlit's root element says whether a script run is in progress, but after a click that reruns the
# script it still says `notRunning` until the server's answer arrives (the browser does not mark the rerun
# as requested), so a test that waits on that alone can go on before the rerun has even started, then
# click into a page that redraws under it (a select box that opens and closes at once). Every page of a
# context counts the runs it has seen end, from the attribute's own mutation records: `wait_idle` waits
# for one more to end than when it last returned.
RUN_COUNTER_JS = """
(() => {
  window.__tlabRunsDone = 0;
  window.__tlabSeen = 0;
  new MutationObserver(records => {
    for (const r of records) {
      if (r.type === 'attributes' && r.oldValue === 'running' && r.target.getAttribute('data-testid') === 'stApp') {
        window.__tlabRunsDone += 1;
      }
    }
  }).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                        attributeFilter: ['data-test-script-state']});
})();
"""


def new_context(browser, **kw):
    """A browser context whose pages count their script runs (what `wait_idle` waits on)."""
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 900}, **kw})
    context.add_init_script(RUN_COUNTER_JS)
    return context


@pytest.fixture(name="new_context", scope="package")
def new_context_fixture():
    """`new_context(browser, **kw)` as a fixture, for tests that open several sessions."""
    return new_context


@pytest.fixture
def page(browser, request, screenshots):
    context = new_context(browser)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            shot = screenshots / f"failure-{request.node.name}.png"
            try:
                full_screenshot(pg, shot)
                print(f"\n[e2e] failure screenshot: {shot} (page {pg.url})", flush=True)
            except Exception as e:  # a crashed page must not hide the real failure
                print(f"\n[e2e] no failure screenshot: {e}", flush=True)
        context.close()


_SETTLED_JS = """(after) => {
    const app = document.querySelector("[data-testid='stApp']");
    return !!app && window.__tlabRunsDone > after
           && app.getAttribute('data-test-script-state') === 'notRunning'
           && !document.querySelector("[data-testid='stSkeleton']");
}"""


def _settle(page, after: int, timeout_ms: float) -> None:
    page.wait_for_function(_SETTLED_JS, arg=after, timeout=timeout_ms, polling=100)
    page.evaluate("() => { window.__tlabSeen = window.__tlabRunsDone; }")


def wait_idle(page, timeout_ms: float = 60_000) -> None:
    """After a `goto` (or a `rerun` block): a script run has ended since the page loaded (or since the last
    wait), none is in progress, and every element has rendered. The last matters on a context's first
    visit: the browser loads each widget's code on demand and shows a loading skeleton (`stSkeleton`) in
    its place meanwhile, which a click lands on and does nothing.

    With a `run_every` fragment on the page every tick is a run: wait on content there.
    """
    _settle(page, page.evaluate("() => window.__tlabSeen"), timeout_ms)


@contextlib.contextmanager
def rerun(page, timeout_ms: float = 60_000):
    """`with rerun(page): <a click or an Enter that reruns the script>`: on leaving the block, wait for
    that run to end and render. Counted from before the action, so a run that ended earlier (a long
    button's, a fragment's) can't pass for it, nor can the page's `notRunning` from before the server
    has even heard of the click."""
    before = page.evaluate("() => window.__tlabRunsDone")
    yield
    _settle(page, before, timeout_ms)


def full_screenshot(page, path: Path, max_height: int = 6000) -> Path:
    """Screenshot of the whole app, not just the first 900 px.

    Streamlit scrolls inside `stMain`, not the document, so `full_page=True` gives only the
    viewport: grow the viewport to the content's height for the shot, then put it back.
    """
    size = page.viewport_size
    height = page.evaluate(
        "() => { const m = document.querySelector(\"[data-testid='stMain']\"); return m ? m.scrollHeight : 0; }")
    if size and height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(height, max_height)})
        page.wait_for_timeout(500)  # let plotly redraw at the new size
    try:
        page.screenshot(path=str(path))
    finally:
        if size:
            page.set_viewport_size(size)
    return path


@pytest.fixture(scope="session")
def snap(screenshots):
    """`snap(page, "01-x.png")`: a full-height screenshot into the screenshots folder."""
    return lambda page, name: full_screenshot(page, screenshots / name)


@pytest.fixture(name="rerun", scope="session")
def rerun_fixture():
    """`rerun` as a fixture."""
    return rerun


@pytest.fixture(name="wait_idle", scope="session")
def wait_idle_fixture():
    """`wait_idle` as a fixture: test modules can't import a conftest reliably (two are named conftest)."""
    return wait_idle
