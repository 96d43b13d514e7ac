"""Where things live on disk: one data folder, `./runs` or `$TLAB_HOME`.

Everything the app writes goes inside it: `inside_home` checks a path before
anything is written there, and run folders are built only from validated run
ids. `folder:PATH` datasets are read only under `allowed_roots()`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core import limits
from core.errors import ConfigError, DataError

# new_run_id() makes '20261125-203000-a1b2c3'; group ids are 'g-' + hex. Nothing
# with a dot or a slash can name a folder outside the data folder.
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# The folder that holds the `core` package: child `python -m core` processes
# run with it on PYTHONPATH (or as their cwd), whatever the parent's cwd.
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    """The data folder: run store, checkpoints and downloaded datasets."""
    return Path(os.environ.get("TLAB_HOME") or "runs").expanduser()


def datasets_dir() -> Path:
    return home() / "datasets"


def check_run_id(run_id: str) -> str:
    """The run id itself, or a ConfigError: ids are letters, digits, '-' and '_'."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        shown = repr(run_id)[:80]
        raise ConfigError(f"{shown} is not a run id (letters, digits, '-' and '_' only): "
                          "`python -m core runs` lists the ids.")
    return run_id


def run_dir(run_id: str) -> Path:
    return home() / check_run_id(run_id)


def write_atomic(out: Path, content: bytes, error: type[Exception]) -> Path:
    """Write `content` to `out` whole or not at all (a .part file, then a rename);
    a failure is `error` with a message that says what to do."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(content)
        tmp.replace(out)
    except OSError as e:
        raise error(f"Can't write {out} ({e.strerror or e}): choose a writable place.") from None
    return out


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def inside_home(path: str | os.PathLike, what: str = "output") -> Path:
    """`path` resolved (links followed), if it lies inside the data folder; a
    ConfigError otherwise. Use it before writing anything a person named:
    checkpoints, exports, reports."""
    root = home().expanduser().resolve()
    p = Path(path).expanduser()
    resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
    if not _within(resolved, root):
        raise ConfigError(f"The {what} path {p} is outside the data folder {root}: the app writes only there. "
                          f"Give a path inside {root} (or point TLAB_HOME elsewhere).")
    return resolved


def allowed_roots() -> list[Path]:
    """Folders `folder:PATH` datasets may be read from: the data folder, plus
    those listed in $TLAB_FOLDER_ROOTS; resolved, so links can't lead out."""
    roots = [home().expanduser().resolve()]
    for raw in limits.folder_roots_setting():
        r = Path(raw.strip()).expanduser().resolve()
        if r not in roots:
            roots.append(r)
    return roots


def check_readable(path: str | os.PathLike) -> Path:
    """A dataset path resolved, if it lies under an allowed root; a ConfigError
    naming the roots and the setting otherwise (checked before the path is
    looked at, so the answer tells nothing about what exists outside them)."""
    p = Path(path).expanduser()
    resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
    roots = allowed_roots()
    if not any(_within(resolved, r) for r in roots):
        sep = os.pathsep
        raise ConfigError(
            f"{p} is outside the folders this app may read images from ({', '.join(str(r) for r in roots)}). "
            f"Copy it into {roots[0] / 'datasets'}, or add the folder that holds it to "
            f"{limits.FOLDER_ROOTS_ENV} (several separated by '{sep}') and restart.")
    return resolved


def save_upload(kind: str, filename: str, content: bytes) -> Path:
    """Keep an uploaded file in the data folder, named by its content, so the
    worker process can read it and the same upload is stored once."""
    import hashlib

    if len(content) > limits.max_upload_bytes():
        raise DataError(f"{Path(filename).name} is {len(content) / 2**20:,.1f} MB, over {limits.MAX_UPLOAD_MB.describe()}: "
                        "upload a smaller file.")
    if not re.fullmatch(r"[a-z]+", kind):
        raise ValueError(f"upload kind {kind!r}")
    digest = hashlib.sha256(content).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(filename).name)[-80:].lstrip(".") or "upload"
    folder = home() / "uploads" / kind / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe
    if not path.exists():
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)
    return path
