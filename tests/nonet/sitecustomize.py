"""Put on PYTHONPATH of subprocesses in tests: no network but loopback."""
import socket

_connect = socket.socket.connect


def _guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or self.family == socket.AF_UNIX):
        return _connect(self, address)
    raise OSError(f"network disabled in tests (tried {address!r})")


socket.socket.connect = _guarded
