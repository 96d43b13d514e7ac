"""The run store's file: its tables (a list of migrations, applied in order
and counted in SQLite's user_version), the mark that says the file is ours,
the run statuses, and what an SQLite or disk error means to a person."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core import paths
from core.errors import TLabError

APPLICATION_ID = 0x544C4142  # "TLAB": marks the file as ours
DB_NAME = "tlab.sqlite"
TERMINAL = ("finished", "failed", "cancelled", "interrupted")
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
]
SCHEMA_VERSION = len(MIGRATIONS)


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
