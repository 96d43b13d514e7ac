"""Where things live on disk: one data folder, `./runs` or `$TLAB_HOME`.

Everything the app writes goes inside it: `inside_home` checks a path before
anything is written there, and run folders are built only from validated run
ids. `folder:PATH` datasets are read only under `allowed_roots()`: the data
folder, $TLAB_FOLDER_ROOTS, and the folders `python -m core allow` recorded in
the data folder's settings.toml (only the CLI writes it, never the web page).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core import limits
from core.errors import ConfigError, DataError, FolderNotAllowed

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


SETTINGS_FILE = "settings.toml"  # in the data folder: what `python -m core allow` records


def settings_path() -> Path:
    return home() / SETTINGS_FILE


def recorded_roots() -> list[Path]:
    """The folders `python -m core allow` recorded in the data folder's
    settings file, read afresh at each call (a root allowed while the app runs
    counts at its next use). An unreadable file is a ConfigError naming it."""
    import tomllib

    f = settings_path()
    try:
        text = f.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError(f"Can't read {f} ({e.strerror or e}): make it readable, or delete it and allow the folders again.") from None
    try:
        listed = tomllib.loads(text).get("folders", {}).get("allowed", [])
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{f} is not valid TOML ({e}): fix it, or delete it and run `python -m core allow PATH` again.") from None
    return [Path(r) for r in listed if isinstance(r, str) and r.strip()]


def write_recorded_roots(roots: list[Path]) -> Path:
    """Record the allowed folders (the CLI's `allow`; the web page never calls this)."""
    import json

    lines = ["# Folders whose images `folder:PATH` datasets may read, besides the data folder.",
             "# Change them with `python -m core allow PATH`, `--remove PATH`, `--list`.", "[folders]",
             "allowed = [" + ", ".join(json.dumps(str(r)) for r in roots) + "]", ""]
    return write_atomic(settings_path(), "\n".join(lines).encode(), ConfigError)


def allowed_roots() -> list[Path]:
    """Folders `folder:PATH` datasets may be read from: the data folder, those
    listed in $TLAB_FOLDER_ROOTS, and those recorded by `python -m core allow`;
    resolved, so links can't lead out."""
    roots = [home().expanduser().resolve()]
    for raw in [*limits.folder_roots_setting(), *map(str, recorded_roots())]:
        r = Path(raw.strip()).expanduser().resolve()
        if r not in roots:
            roots.append(r)
    return roots


def allow_command(path: Path) -> str:
    """The command that allows `path`'s folder (a ZIP's: the folder holding
    it), for the data folder this process uses."""
    import shlex

    folder = path.parent if path.suffix.lower() == ".zip" else path
    env = f"TLAB_HOME={shlex.quote(os.environ['TLAB_HOME'])} " if os.environ.get("TLAB_HOME") else ""
    return f"{env}python -m core allow {shlex.quote(str(folder))}"


def check_readable(path: str | os.PathLike) -> Path:
    """A dataset path resolved, if it lies under an allowed root; a ConfigError
    naming the roots and the command that allows it otherwise (checked before
    the path is looked at, so the answer tells nothing about what exists outside them)."""
    p = Path(path).expanduser()
    resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
    roots = allowed_roots()
    if not any(_within(resolved, r) for r in roots):
        command = allow_command(resolved)
        raise FolderNotAllowed(
            f"{p} is outside the folders this app may read images from ({', '.join(str(r) for r in roots)}). "
            f"To allow it, run `{command}` in a terminal on this machine (no restart needed), "
            f"or copy it into {roots[0] / 'datasets'}.", command)
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
