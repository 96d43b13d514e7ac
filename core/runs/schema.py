"""The run store's file: its tables (a list of migrations, applied in order
and counted in SQLite's user_version), the mark that says the file is ours,
the run statuses, and what an SQLite or disk error means to a person."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from core import paths
from core.errors import TLabError

APPLICATION_ID = 0x544C4142  # "TLAB": marks the file as ours
DB_NAME = "tlab.sqlite"
TERMINAL = ("finished", "failed", "cancelled", "interrupted", "pruned")
STATUSES = ("queued", "running", *TERMINAL)


class StoreError(TLabError):
    pass


MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        group_id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued','running','finished','failed','cancelled','interrupted')),
        reason TEXT NOT NULL DEFAULT '',
        device TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        worker_pid INTEGER,
        pid_start TEXT,
        heartbeat REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        side_by_side INTEGER NOT NULL DEFAULT 0,
        epochs_done INTEGER NOT NULL DEFAULT 0,
        steps_per_epoch INTEGER,
        best_val_accuracy REAL,
        val_accuracy REAL,
        test_accuracy REAL,
        class_names TEXT,
        plan TEXT,
        result TEXT
    );
    CREATE INDEX runs_status ON runs(status);
    CREATE INDEX runs_group ON runs(group_id);
    CREATE TABLE step_metrics (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        loss REAL, lr REAL, images_per_second REAL, t REAL,
        PRIMARY KEY (run_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE epoch_metrics (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        train_loss REAL, train_accuracy REAL, val_loss REAL, val_accuracy REAL,
        seconds REAL, images_per_second REAL, t REAL,
        PRIMARY KEY (run_id, epoch)
    ) WITHOUT ROWID;
    CREATE TABLE layer_stats (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        grp TEXT NOT NULL,
        position INTEGER NOT NULL,
        frozen INTEGER NOT NULL, lr REAL, params INTEGER, grad_norm REAL, weight_change REAL,
        PRIMARY KEY (run_id, epoch, grp)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT REFERENCES runs(id) ON DELETE CASCADE,
        t REAL NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_run ON events(run_id, id);
    CREATE TABLE workers (
        pid INTEGER PRIMARY KEY,
        pid_start TEXT,
        started REAL NOT NULL,
        heartbeat REAL
    );
    """,
    # 2: what question a group of runs answers (race, sweep, distill), for the Compare page
    """
    ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT ''
    """,
    # 3: runs over several processes (torchrun): how many trained it, and each one's throughput
    """
    ALTER TABLE runs ADD COLUMN world_size INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE rank_metrics (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        rank INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        images_per_second REAL,
        PRIMARY KEY (run_id, step, rank)
    ) WITHOUT ROWID
    """,
    # 4: a trial of a hyperparameter search that its pruner stopped ends 'pruned' (see _allow_pruned)
    "allow_pruned",
]
SCHEMA_VERSION = len(MIGRATIONS)


def _allow_pruned(conn: sqlite3.Connection) -> None:
    """Widen the status CHECK of `runs` by one value. SQLite can't alter a
    CHECK; rebuilding the table would cascade-delete every run's metrics. Its
    documented way for a change that leaves stored rows valid: edit the table's
    SQL in sqlite_master and bump the schema cookie, in the migration's
    transaction (sqlite.org/lang_altertable.html, "other kinds of changes")."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()[0]
    if "'pruned'" in sql:
        return
    widened = sql.replace("'cancelled','interrupted')", "'cancelled','interrupted','pruned')")
    if widened == sql:
        raise StoreError("The run store's runs table has an unexpected status check: it can't be upgraded in place.")
    cookie = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'runs'", (widened,))
        conn.execute(f"PRAGMA schema_version = {cookie + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")


# Migrations written in Python (a name in MIGRATIONS), for what plain SQL statements can't do.
CODE_MIGRATIONS: dict[str, Callable[[sqlite3.Connection], None]] = {"allow_pruned": _allow_pruned}


def db_path() -> Path:
    return paths.home() / DB_NAME


def explain(e: Exception, path: Path) -> StoreError:
    msg = str(e)
    if isinstance(e, sqlite3.OperationalError) and ("full" in msg or "disk" in msg and "I/O" in msg):
        return StoreError(f"The data folder {path.parent} is full ({msg}): free some disk space, or point TLAB_HOME at another folder.")
    if isinstance(e, sqlite3.OperationalError) and ("readonly" in msg or "read-only" in msg):
        return StoreError(f"The run store {path} is read-only ({msg}): make the data folder writable, or point TLAB_HOME at a writable folder.")
    if isinstance(e, sqlite3.OperationalError) and "unable to open" in msg:
        return StoreError(f"Can't open the run store {path} ({msg}): check that the data folder exists and is writable, or set TLAB_HOME.")
    if isinstance(e, OSError):
        return StoreError(f"Can't write in the data folder {path.parent} ({e.strerror or e}): make it writable, free disk space, or set TLAB_HOME.")
    return StoreError(f"Run store {path}: {msg}")
