"""Browser test fixtures: the real app under `streamlit run`, driven by Debian's chromium.

Fixtures
- `more_apps` (function): a factory for further app servers (e.g. two on one data folder).
- `app_server` (session): starts `python -m streamlit run app.py` on a free loopback port with
  an empty data folder ($TLAB_HOME) and an empty torch hub cache ($TORCH_HOME), the network
  blocked (tests/nonet on PYTHONPATH); yields an `AppServer` (`.url`, `.home`, `.log`). At the
  end it stops the server and every worker process that training started.
- `app_url` (session): the server's base URL, no trailing slash.
- `browser` (session): Playwright (sync API) launching `/usr/bin/chromium` headless.
- `page` (function): a fresh 1400x900 page; a screenshot is saved if the test fails.
- `screenshots` (session): the folder screenshots go to (printed, and named in the summary);
  `snap` (session): `snap(page, name)` saves a full-height screenshot there.
- `wait_idle` (session): the helper `wait_idle(page)`: the app view is there and the script is
  not running.

The browser is Debian's package (`make install-browser`); never `playwright install`.
Set TLAB_E2E_CHROMIUM to use another binary, TLAB_E2E_SCREENSHOTS for another folder.
"""

from __future__ import annotations

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
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: real-browser end-to-end test (starts the app, trains for real)")


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


@pytest.fixture(scope="session")
def app_server(screenshots) -> AppServer:
    tmp = Path(tempfile.mkdtemp(prefix="tlab-e2e-"))
    server = start_app(tmp / "tlab", tmp / "server.log")
    try:
        print(f"[e2e] app up at {server.url} in {wait_healthy(server):.1f}s (TLAB_HOME={server.home})", flush=True)
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


@pytest.fixture(scope="session")
def app_url(app_server) -> str:
    return app_server.url


# --- the browser --------------------------------------------------------------------------

@pytest.fixture(scope="session")
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


@pytest.fixture
def page(browser, request, screenshots):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
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


def wait_idle(page, timeout_ms: float = 60_000) -> None:
    """The app view is rendered and the script has finished its run.

    With a `run_every` fragment on the page the state flips on every tick: wait on content there.
    """
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=timeout_ms)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms)


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


@pytest.fixture(name="wait_idle", scope="session")
def wait_idle_fixture():
    """`wait_idle` as a fixture: test modules can't import a conftest reliably (two are named conftest)."""
    return wait_idle
