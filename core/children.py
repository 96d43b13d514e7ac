"""Starting child processes that outlive the call that started them.

A worker or a background task is detached (its own session, so a Ctrl-C or a
page reload does not reach it) but it is still this process's child, and a
child that ends stays in the process table as a zombie until its parent
reaps it. A Streamlit server runs for weeks and launches a worker per Launch:
without reaping, it collects one `<defunct>` entry per launch. So every
detached child gets a daemon thread that waits for it; the moment it ends it
is reaped, and its `Popen.poll()` tells the exit status as usual.

Every child process the app starts goes through here: detached ones (workers,
background tasks) with `start_detached`, waited-for ones (torchrun under the
worker or the CLI) with `run_child`; `core_env` is the environment a
`python -m core` child needs to find this source tree from any folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Mapping, Sequence

from core import paths


def core_command(*args: str) -> list[str]:
    """`python -m core ARGS` with this interpreter."""
    return [sys.executable, "-m", "core", *args]


def core_env(**extra: str) -> dict[str, str]:
    """This process's environment plus `extra`, with the source tree first on
    PYTHONPATH, so `-m core` works whatever the child's working folder."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(paths.SOURCE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def start_detached(cmd: Sequence[str], env: Mapping[str, str], cwd: str | Path | None = None,
                   stdout: IO | int = subprocess.DEVNULL, stderr: IO | int = subprocess.STDOUT) -> subprocess.Popen:
    """Start `cmd` in its own session with no standard input; it is reaped as soon as it ends."""
    proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, start_new_session=True, close_fds=True)
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc


def run_child(cmd: Sequence[str], env: Mapping[str, str], stdin: IO | int | None = subprocess.DEVNULL) -> int:
    """Run `cmd` in the foreground and wait for it; its exit code. Standard
    output and error are this process's (torchrun's ranks log there)."""
    return subprocess.call(list(cmd), env=dict(env), stdin=stdin, close_fds=True)


def pid_start(pid: int) -> str | None:
    """A process's start time (Linux), to tell a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    """Is this process running (not a zombie, not a reused pid)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc (macOS): os.kill's answer stands
    if fields[0] == "Z":
        return False  # exited, not yet reaped by its parent
    return start is None or fields[19] == start
