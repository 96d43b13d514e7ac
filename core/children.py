"""Starting child processes that outlive the call that started them.

A worker or a background task is detached (its own session, so a Ctrl-C or a
page reload does not reach it) but it is still this process's child, and a
child that ends stays in the process table as a zombie until its parent
reaps it. A Streamlit server runs for weeks and launches a worker per Launch:
without reaping, it collects one `<defunct>` entry per launch. So every
detached child gets a daemon thread that waits for it; the moment it ends it
is reaped, and its `Popen.poll()` tells the exit status as usual.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import IO, Mapping, Sequence


def start_detached(cmd: Sequence[str], env: Mapping[str, str], cwd: str | Path | None = None,
                   stdout: IO | int = subprocess.DEVNULL, stderr: IO | int = subprocess.STDOUT) -> subprocess.Popen:
    """Start `cmd` in its own session with no standard input; it is reaped as soon as it ends."""
    proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, start_new_session=True, close_fds=True)
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc
