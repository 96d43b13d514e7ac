"""A data folder in one ZIP, and back: `python -m core backup --out FILE`
while runs are writing, `python -m core restore FILE` into an empty folder.

The store is copied with SQLite's online backup API (`Connection.backup`): a
consistent snapshot, whatever writers do meanwhile. A file copy of a WAL
database taken mid-write can be torn. The run folders are copied first and the
store last, so the store is never behind a checkpoint in the same backup (a
resume drops metrics past its checkpoint; the reverse would leave a gap).
Temporary files of writes under way (`*.tmp`) are skipped: checkpoints are
replaced by a rename, so the copy sees the old file or the new one, whole.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from core import paths
from core.errors import TLabError
from core.runs import integrity, storage
from core.runs.schema import DB_NAME

MANIFEST = "tlab-backup.txt"


class BackupError(TLabError):
    pass


def _folder_files(folder: Path):
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".tmp"):
                yield Path(root) / name


def backup(store, out: str | os.PathLike) -> dict:
    """Write the store and its run folders to the ZIP `out` (refused if it
    exists). Returns what went in: runs, files, bytes, seconds."""
    t0 = time.perf_counter()
    out = Path(out).expanduser().resolve()
    if out.exists():
        raise BackupError(f"{out} exists already: give a new file name for the backup.")
    if not out.parent.is_dir():
        raise BackupError(f"The folder {out.parent} does not exist: create it or give another path for the backup.")
    home = paths.home().resolve()
    if home == out.parent or home in out.parents:
        raise BackupError(f"{out} is inside the data folder {home}: put the backup elsewhere (another disk is best).")
    ids = [r["id"] for r in store.query("SELECT id FROM runs ORDER BY created, id")]
    tmp_zip = out.with_name(f".{out.name}.{os.getpid()}.part")
    files = 0
    try:
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for run_id in ids:
                folder = paths.run_dir(run_id)
                for f in _folder_files(folder) if folder.is_dir() else ():
                    try:
                        z.write(f, f"{run_id}/{f.relative_to(folder).as_posix()}")
                        files += 1
                    except FileNotFoundError:
                        continue  # replaced or removed while we copied: the next name is the one that counts
            with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tlab-backup-") as tmp:
                snap = Path(tmp) / DB_NAME
                dst = sqlite3.connect(snap)
                try:
                    with store._lock:
                        store.conn.backup(dst)
                    dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                finally:
                    dst.close()
                z.write(snap, DB_NAME)
            z.writestr(MANIFEST, f"Transfer Learning Lab backup of {home}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                                 f"{len(ids)} runs\n")
        os.replace(tmp_zip, out)
    except OSError as e:
        tmp_zip.unlink(missing_ok=True)
        raise BackupError(f"Could not write the backup {out} ({e.strerror or e}): free space there or choose "
                          "another place.") from None
    return {"file": str(out), "runs": len(ids), "files": files + 1, "bytes": out.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 3)}


def _member_target(name: str, home: Path) -> Path | None:
    """Where a ZIP member goes, or None for one that isn't ours (or tries to leave the folder)."""
    p = PurePosixPath(name)
    if name == DB_NAME:
        return home / DB_NAME
    if p.is_absolute() or ".." in p.parts or len(p.parts) < 2 or not paths.RUN_ID_RE.fullmatch(p.parts[0]):
        return None
    if p.parts[0] in storage.KIND_OF_FOLDER or name.endswith("/"):
        return None
    return home.joinpath(*p.parts)


def restore(file: str | os.PathLike) -> dict:
    """Bring a backup back into the data folder, which must be empty (or not
    exist). Runs that were queued or running when it was taken come back
    interrupted: resume them to continue."""
    src = Path(file).expanduser()
    home = paths.home()
    if home.exists() and any(home.iterdir()):
        raise BackupError(f"The data folder {home.resolve()} is not empty: restore only into an empty one "
                          "(set TLAB_HOME to a new folder, or move this one away).")
    try:
        z = zipfile.ZipFile(src)
    except (OSError, zipfile.BadZipFile) as e:
        raise BackupError(f"{src} is not a readable backup ({e}): give a file written by `python -m core backup`.") from None
    with z:
        names = z.namelist()
        if DB_NAME not in names:
            raise BackupError(f"{src} holds no run store ({DB_NAME}): give a file written by `python -m core backup`.")
        bad = z.testzip()
        if bad:
            raise BackupError(f"{src} is damaged (CRC mismatch in {bad}): nothing was restored.")
        home.mkdir(parents=True, exist_ok=True)
        skipped, files = [], 0
        for info in z.infolist():
            target = _member_target(info.filename, home.resolve())
            if target is None:
                if info.filename != MANIFEST and not info.filename.endswith("/"):
                    skipped.append(info.filename)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as fin, open(target, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    fout.write(chunk)
            files += 1
    db = home / DB_NAME
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        found = integrity.problems(conn, "integrity_check")
        if found:
            raise BackupError(f"The store in {src} is damaged ({'; '.join(found[:3])}): restored anyway into "
                              f"{home}; `python -m core check` says what can be read.")
        conn.execute("PRAGMA journal_mode = WAL")
        unfinished = _mark_unfinished(conn)
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        conn.close()
    integrity.forget(db)
    return {"home": str(home.resolve()), "runs": runs, "files": files, "interrupted": unfinished, "skipped": skipped}


def _mark_unfinished(conn: sqlite3.Connection) -> int:
    now = time.time()
    n = 0
    for status in ("queued", "running"):
        n += conn.execute("UPDATE runs SET status = 'interrupted', ended = ?, worker_pid = NULL, reason = ? "
                          "WHERE status = ?", (now, f"it was {status} when the backup was taken: resume it to continue",
                                               status)).rowcount
    return n
