"""Shared fixtures: no network, a private data folder and torch hub cache per test."""

from __future__ import annotations

import socket

import pytest


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
    """Each test gets its own data folder and an empty torch hub cache."""
    home = tmp_path / "tlab"
    monkeypatch.setenv("TLAB_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return home


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs: thread start-up costs more than it saves (about 3x slower on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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

    from core import engine
    from core.config import RunConfig

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
