"""Where things live on disk: one data folder, `./runs` or `$TLAB_HOME`."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data folder: run store, checkpoints and downloaded datasets."""
    return Path(os.environ.get("TLAB_HOME") or "runs").expanduser()


def datasets_dir() -> Path:
    return home() / "datasets"


def run_dir(run_id: str) -> Path:
    return home() / run_id


def save_upload(kind: str, filename: str, content: bytes) -> Path:
    """Keep an uploaded file in the data folder, named by its content, so the
    worker process can read it and the same upload is stored once."""
    import hashlib

    digest = hashlib.sha256(content).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(filename).name)[-80:] or "upload"
    folder = home() / "uploads" / kind / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)
    return path
