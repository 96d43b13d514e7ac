"""Is the data folder whole? A quick check of the store when it is opened
(SQLite's `quick_check`, once per process), and the full check behind
`python -m core check`: the store's `integrity_check`, every checkpoint (the
CRC-32 of every entry of its ZIP) and every cache entry (its own CRCs).

A damaged file is reported with what it cost and what still works; nothing
here crashes, and nothing damaged is dropped without being named.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.runs import storage
from core.runs.schema import StoreError

log = logging.getLogger(__name__)

_checked: dict[str, list[str]] = {}
_lock = threading.Lock()
MAX_PROBLEMS = 20


class StoreDamaged(StoreError):
    """The store file can't be read at all (a truncated or overwritten file)."""


def problems(conn: sqlite3.Connection, pragma: str = "quick_check") -> list[str]:
    """SQLite's own answer: [] when the file is whole, else its first messages."""
    rows = conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})").fetchall()
    found = [line.strip() for r in rows for line in str(r[0]).splitlines()
             if line.strip() and not line.startswith("*** in database")]
    return [] if found == ["ok"] else found[:MAX_PROBLEMS]


# quick_check reads the whole file (about 0.05 s per MB on a busy 2-core machine, bench/storage_upkeep.py):
# once per process, and not again within this many seconds of a clean check by any process, unless the
# file got shorter since (a truncated write is what it is there to catch).
RECHECK_S = 600.0
STAMP = ".quick_check"


def _recently_clean(path: Path) -> bool:
    try:
        size, when = (float(x) for x in (path.parent / STAMP).read_text().split())
        return time.time() - when < RECHECK_S and path.stat().st_size >= size
    except (OSError, ValueError):
        return False


def on_open(path: Path, conn: sqlite3.Connection) -> list[str]:
    """`quick_check` of the store at `path`, once per process (later opens reuse the answer)."""
    key = str(Path(path).resolve())
    with _lock:
        if key not in _checked:
            if _recently_clean(Path(key)):
                _checked[key] = []
                return []
            t0 = time.perf_counter()
            _checked[key] = problems(conn)
            log.debug("quick_check of %s: %.3f s", key, time.perf_counter() - t0)
            if _checked[key]:
                log.warning("run store %s is damaged: %s", key, "; ".join(_checked[key][:3]))
            else:
                try:
                    (Path(key).parent / STAMP).write_text(f"{Path(key).stat().st_size} {time.time()}")
                except OSError:
                    pass  # a read-only or full data folder: check again next time
        return _checked[key]


def forget(path: Path) -> None:
    """Check the store again at its next open (after a restore or a repair)."""
    with _lock:
        _checked.pop(str(Path(path).resolve()), None)
        (Path(path).resolve().parent / STAMP).unlink(missing_ok=True)


def what_still_works() -> str:
    """For a store that can't be read: what the run folders still hold."""
    folders = [e for e in storage._entries(paths.home())
               if e.is_dir(follow_symlinks=False) and storage.looks_like_run_folder(Path(e.path))]
    with_ckpt = [f for f in folders if any(Path(f.path).glob("*.pt"))]
    return (f"{len(folders)} run folder(s) are untouched, {len(with_ckpt)} with a checkpoint (their settings are in "
            "config.toml beside it)")


def unreadable(path: Path, error: Exception) -> StoreDamaged:
    return StoreDamaged(
        f"The run store {path} is damaged ({error}): the list of runs, their metrics and events can't be read. "
        f"Still there: {what_still_works()}. Restore your latest backup into an empty data folder "
        "(`python -m core restore FILE`), or move the damaged file away to start a new store.")


def damage_summary(found: list[str]) -> str:
    return (f"The run store is damaged (SQLite quick_check: {'; '.join(found[:3])}"
            f"{'; ...' if len(found) > 3 else ''}). Runs and metrics that can be read are shown; some rows may be "
            "missing or fail to load. `python -m core check` checks everything; restoring an earlier backup "
            "(`python -m core restore FILE` into an empty folder) brings back the rest.")


@dataclass
class Report:
    store: list[str] = field(default_factory=list)  # integrity_check's messages; [] when whole
    checkpoints: int = 0
    caches: int = 0
    damaged: list[dict] = field(default_factory=list)  # {kind, path, problem, lost, works}
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.store and not self.damaged

    def to_dict(self) -> dict:
        return {"ok": self.ok, "store": self.store or "ok", "checkpoints_checked": self.checkpoints,
                "caches_checked": self.caches, "damaged": self.damaged, "seconds": round(self.seconds, 3)}


def full_check(store) -> Report:
    """Every file of the data folder that can be checked, checked."""
    from core.train import cache, checkpoint

    t0 = time.perf_counter()
    rep = Report()
    with store._lock:
        rep.store = problems(store.conn, "integrity_check")
    try:
        rows = {r["id"]: r for r in store.query("SELECT id, name, epochs_done FROM runs")}
    except StoreError:
        rows = {}
    if rep.store:
        rep.damaged.append({"kind": "store", "path": str(store.path),
                            "problem": "; ".join(rep.store[:3]) + (f" (+{len(rep.store) - 3} more)" if len(rep.store) > 3 else ""),
                            "lost": "what sits on the damaged pages (rows of runs, metrics or events, or an index)",
                            "works": f"{len(rows)} run(s) still read; run folders are untouched; restoring an "
                                     "earlier backup (into an empty folder) brings back the rest"})
    for e in storage._entries(paths.home()):
        folder = Path(e.path)
        if not (e.is_dir(follow_symlinks=False) and (e.name in rows or storage.looks_like_run_folder(folder))):
            continue
        for ckpt in sorted(folder.glob("*.pt")):
            rep.checkpoints += 1
            problem = checkpoint.damage(ckpt)
            if problem:
                rep.damaged.append({"kind": "checkpoint", "path": str(ckpt), "problem": problem,
                                    "lost": f"the trained weights of run {e.name} in {ckpt.name}",
                                    "works": "its metrics, settings (config.toml) and events; launch it again "
                                             "to retrain"})
    for kind in cache.KINDS:
        for f in sorted(cache.cache_dir(kind).glob("*.pt")):
            rep.caches += 1
            problem = cache.damage(f)
            if problem:
                f.unlink(missing_ok=True)
                rep.damaged.append({"kind": f"{kind} cache", "path": str(f), "problem": problem,
                                    "lost": "nothing: a cache entry, deleted now",
                                    "works": "the next run that needs it computes it again"})
    rep.seconds = time.perf_counter() - t0
    return rep
