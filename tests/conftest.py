"""Shared fixtures: no network, a private data folder and torch hub cache per test.
At the end of the session, a check that no process the suite started is left running or defunct.

The test files mirror the packages (tests/train, runs, insight, lessons, cli, ui; tests/e2e for the
browser); the fixtures more than one of them use live here, the plain helpers in helpers.py.
- `fresh_raw_cache`: core.train.data's in-process cache of decoded datasets, empty before and after a
  test, so each read is a new process's (modules use it with `pytestmark = usefixtures(...)`).
- `mount_tmpfs`: `mount_tmpfs("512k")` mounts a real small filesystem to fill up or make read-only.
- `digit_png`: a PNG file of a real handwritten 7 (scikit-learn's digits, 32x32 greys).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

# Every process the suite starts inherits this variable (app servers, workers, torchrun ranks, chromium),
# so the session's end can find any that outlived it, however detached.
SESSION_MARK = "TLAB_TEST_SESSION"
LEFTOVER_GRACE_S = 20  # a worker exits 1.5 s after its queue empties; nothing else should be left at all


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real processes, browsers or long trainings; `make test-fast` skips them")
    if not hasattr(config, "workerinput"):
        os.environ.setdefault(SESSION_MARK, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        # Every worker, CLI and app server the suite starts trains tiny inputs on one torch thread: a
        # second thread costs more than it gives there, and a busy 2-core machine made two 5-14x slower.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    else:  # one of pytest-xdist's workers (`make test` runs one per core): one torch thread each, not one per core
        import torch

        torch.set_num_threads(1)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _leftovers(mark: str) -> dict[int, str]:
    """Processes of this session still in the table: any carrying the session's mark in its environment,
    and any defunct child of this process (a zombie's environment can't be read)."""
    needle, me, found = f"{SESSION_MARK}={mark}".encode(), os.getpid(), {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        pid, st = int(d.name), _proc_stat(int(d.name))
        if st is None:
            continue
        try:
            marked = needle in (d / "environ").read_bytes().split(b"\0")
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            marked, cmd = False, ""
        if marked or (st[1] == me and st[0] == "Z"):
            found[pid] = f"{pid} [{st[0]}] {cmd[:160] or '(defunct)'}"
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if a process it started is still running or defunct once every fixture has ended."""
    if hasattr(session.config, "workerinput") or os.environ.get(SESSION_MARK, "").split("-")[0] != str(os.getpid()):
        return
    mark = os.environ[SESSION_MARK]
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (left := _leftovers(mark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, os.WNOHANG)  # ours: reap it (another's: ChildProcessError)
        except (ProcessLookupError, ChildProcessError):
            pass
    session.config._tlab_leftovers = left
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    left = getattr(config, "_tlab_leftovers", None)
    if left:
        terminalreporter.write_sep("=", "processes left behind", red=True)
        terminalreporter.write_line(f"{len(left)} process(es) the suite started outlived it "
                                    f"({LEFTOVER_GRACE_S} s after the last test; now killed):")
        for line in left.values():
            terminalreporter.write_line("  " + line)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection beyond loopback fails, as on a machine offline."""
    real = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family == socket.AF_UNIX or (isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1"))):
            return real(self, address)
        raise OSError(f"network disabled in tests (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session", autouse=True)
def folder_roots(tmp_path_factory):
    """Images that tests make under pytest's temporary folders may be read as
    `folder:` datasets (the app itself reads only its data folder and the
    roots in TLAB_FOLDER_ROOTS)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLAB_FOLDER_ROOTS", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own data folder, an empty torch hub cache and an empty Hugging Face cache."""
    home = tmp_path / "tlab"
    monkeypatch.setenv("TLAB_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs: thread start-up costs more than it saves (about 3x slower on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_raw_cache():
    """core.train.data.load_raw caches decoded datasets per process: empty it before and after the test."""
    from core.train import data

    data._raw_cached.cache_clear()
    yield
    data._raw_cached.cache_clear()


@pytest.fixture
def mount_tmpfs(tmp_path):
    """`mount_tmpfs(size)`: a real filesystem of `size` (tmpfs, e.g. "512k", "48m") on a fresh folder, to
    fill up or make read-only; unmounted at the end. Mounting needs root (as in CI): else the test skips."""
    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"mounting a tmpfs needs root: {res.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def digit_png(tmp_path_factory) -> Path:
    """A PNG file of a real handwritten 7: scikit-learn's digit no. 7, 8x8 greys scaled to 0-255, then 32x32."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    assert d.target[7] == 7
    path = tmp_path_factory.mktemp("img") / "seven.png"
    Image.fromarray(np.round(d.images[7] * (255 / 16)).astype(np.uint8)).resize((32, 32)).save(path)
    return path


# --- tiny trained runs shared by the "seeing inside" tests (issue 6) ------------------------


def make_shapes_zip(path, per_class: int = 30, size: int = 40, seed: int = 0):
    """A ZIP of class folders as a user uploads it: red discs, green squares
    and blue bars on grey noise, `per_class` PNGs each."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for name, colour in (("disc", (220, 40, 40)), ("square", (40, 200, 60)), ("bar", (40, 70, 220))):
            for i in range(per_class):
                im = Image.fromarray(rng.integers(90, 160, (size, size, 3), dtype=np.uint8))
                d = ImageDraw.Draw(im)
                x, y = (int(v) for v in rng.integers(4, size // 2, 2))
                s = int(rng.integers(size // 4, size // 2))
                if name == "disc":
                    d.ellipse((x, y, x + s, y + s), fill=colour)
                elif name == "square":
                    d.rectangle((x, y, x + s, y + s), fill=colour)
                else:
                    d.rectangle((x, 2, x + s // 3, size - 3), fill=colour)
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                zf.writestr(f"shapes/{name}/{i:02d}.png", buf.getvalue())
    return path


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Two really trained runs, once per session: small_cnn from scratch at
    32 px for 1 epoch on digits (`.digits`), and for 4 epochs on an uploaded
    ZIP of class folders (`.shapes`, `.zip`). Run folders, not store rows."""
    import types

    import torch

    from core.train import engine
    from core.train.config import RunConfig

    root = tmp_path_factory.mktemp("tiny_runs")
    zip_path = make_shapes_zip(root / "shapes.zip")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TLAB_HOME", str(root / "tlab"))
            out = {}
            for key, dataset, epochs, lr in (("digits", "digits", 1, None), ("shapes", f"folder:{zip_path}", 4, 1e-2)):
                cfg = RunConfig(backbone="small_cnn", strategy="scratch", dataset=dataset, epochs=epochs, lr=lr,
                                image_size=32, batch_size=16 if key == "shapes" else 32, device="cpu")
                result = engine.train(cfg, run_dir=root / key)
                assert result.status == "finished", result.reason
                out[key] = root / key
    finally:
        torch.set_num_threads(before)
    return types.SimpleNamespace(**out, zip=zip_path)
