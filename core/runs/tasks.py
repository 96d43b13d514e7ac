"""Background commands for pages: `python -m core ...` in a detached process,
its output in files under the data folder, so a page never trains in the
server's process and a reload loses nothing (the result lands on disk).

A task is a folder `tasks/<id>/` holding `cmd.json`, `stdout` (the command's
--json output) and `stderr`; `rc` appears when the process ends.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core import children, paths

_children: dict[str, subprocess.Popen] = {}  # this process's tasks: their state comes from the process itself


@dataclass
class Task:
    id: str
    folder: Path

    @property
    def state(self) -> str:
        """'running', 'finished' (exit 0) or 'failed'."""
        proc = _children.get(self.id)
        if proc is not None and proc.poll() is None:
            return "running"
        rc = self.folder / "rc"
        if rc.exists():
            return "finished" if rc.read_text().strip() == "0" else "failed"
        if proc is not None:  # ended, but the wrapper did not write rc: it was killed
            return "failed"
        return "running" if _alive(self.folder) else "failed"

    def output(self) -> dict | None:
        try:
            return json.loads((self.folder / "stdout").read_text())
        except (OSError, ValueError):
            return None

    def error(self, chars: int = 600) -> str:
        try:
            text = (self.folder / "stderr").read_text(errors="replace").strip()
        except OSError:
            return ""
        lines = [l for l in text.splitlines() if l.startswith("error:")]
        return lines[-1].removeprefix("error:").strip() if lines else text[-chars:]

    def progress(self) -> str:
        try:
            lines = (self.folder / "stderr").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""


def _alive(folder: Path) -> bool:
    try:
        pid = int((folder / "pid").read_text())
        os.kill(pid, 0)
        return Path(f"/proc/{pid}").exists() or sys.platform != "linux"
    except (OSError, ValueError):
        return False


def start(args: list[str]) -> Task:
    """Run `python -m core ARGS` detached; stdout and stderr go to the task folder."""
    task_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    folder = paths.home() / "tasks" / task_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cmd.json").write_text(json.dumps(args))
    # A shell wrapper records the exit status even when no page is there to poll.
    script = ('"$TLAB_PYTHON" -m core "$@" > "$TLAB_TASK_DIR/stdout" 2> "$TLAB_TASK_DIR/stderr"; '
              'echo $? > "$TLAB_TASK_DIR/rc.tmp" && mv "$TLAB_TASK_DIR/rc.tmp" "$TLAB_TASK_DIR/rc"')
    env = children.core_env(TLAB_TASK_DIR=str(folder), TLAB_PYTHON=sys.executable)
    proc = children.start_detached(["/bin/sh", "-c", script, "sh", *args], env, cwd=paths.SOURCE_ROOT,
                                   stderr=subprocess.DEVNULL)
    (folder / "pid").write_text(str(proc.pid))
    _children[task_id] = proc
    return Task(task_id, folder)


def get(task_id: str) -> Task:
    return Task(task_id, paths.home() / "tasks" / task_id)
