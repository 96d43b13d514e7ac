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
