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
