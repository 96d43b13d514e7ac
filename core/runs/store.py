"""The run store: one SQLite file (WAL) in the data folder.

Runs, step and epoch metrics, per-layer-group stats, and a short event log.
Writers are the training processes (through `StoreListener`); readers are the
CLI and the dashboard, which get pandas DataFrames. Metrics are keyed by
(run, step) and (run, epoch), so a resumed run rewrites what it re-does and
the series have neither gaps nor duplicates.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from core import children, paths
from core.children import pid_alive
from core.runs import integrity
from core.runs.listener import StoreListener, format_exception, new_group_id
from core.runs.reads import StoreReads
from core.runs.schema import (APPLICATION_ID, CODE_MIGRATIONS, DB_NAME, MIGRATIONS, SCHEMA_VERSION, STATUSES, TERMINAL, StoreError,
                              db_path, explain)
from core.train.events import new_run_id

log = logging.getLogger(__name__)

# Re-exported: callers import these from here.
__all__ = ["Store", "StoreListener", "StoreError", "TERMINAL", "STATUSES", "DB_NAME", "APPLICATION_ID",
           "SCHEMA_VERSION", "MIGRATIONS", "db_path", "format_exception", "new_group_id", "pid_alive"]


class Store(StoreReads):
    """A handle on the run store. Cheap to open; safe to share between threads."""

    def __init__(self, path: Path | str | None = None, recover: bool = True):
        self.path = Path(path) if path else db_path()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise explain(e, self.path) from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self._check_foreign()
            self.conn.execute("PRAGMA foreign_keys = ON")
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("run store is in %s mode, not WAL", mode)
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
            self.damage = integrity.on_open(self.path, self.conn)  # [] when whole: see integrity.damage_summary
        except sqlite3.DatabaseError as e:
            if "malformed" in str(e):
                raise integrity.unreadable(self.path, e) from None
            if "not a database" not in str(e):
                raise explain(e, self.path) from None
            raise StoreError(f"{self.path} is not a Transfer Learning Lab run store (not a readable SQLite database). "
                             "It was left untouched: move it away, or set TLAB_HOME to another folder.") from None
        if recover:
            try:
                self.recover()
            except StoreError:
                if not self.damage:
                    raise
                log.warning("run store %s: runs left running were not checked (the store is damaged)", self.path)

    def _check_foreign(self) -> None:
        """Refuse a file that isn't ours before anything is written to it.
        Asked through SQLite itself: opening the file with another API and
        closing it would drop SQLite's POSIX locks held in this process."""
        # One statement, so one snapshot: read apart, another process's first
        # migration could commit between them (tables seen, id not yet).
        app_id, tables = self.conn.execute(  # raises on a non-database
            "SELECT (SELECT application_id FROM pragma_application_id()), (SELECT count(*) FROM sqlite_master)").fetchone()
        if app_id == APPLICATION_ID:
            return
        if app_id != 0 or tables:
            raise StoreError(f"{self.path} is an SQLite database of another application "
                             f"(application id {app_id:#x}, {tables} schema objects). It was left untouched: "
                             "move it away, or set TLAB_HOME to another folder.")

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer version of the app (schema {version}, "
                             f"this one knows {SCHEMA_VERSION}): upgrade the app, or set TLAB_HOME to another folder.")
        if version == SCHEMA_VERSION:
            return
        with self.tx():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for i in range(version, SCHEMA_VERSION):
                if MIGRATIONS[i] in CODE_MIGRATIONS:
                    CODE_MIGRATIONS[MIGRATIONS[i]](self.conn)
                    continue
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE)."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            except sqlite3.Error as e:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise explain(e, self.path) from None

    def query(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self.conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as e:
                raise explain(e, self.path) from None

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # --- runs ---------------------------------------------------------------

    def add_run(self, config_json: str, name: str = "", group_id: str | None = None, status: str = "queued",
                run_id: str | None = None, side_by_side: bool = False, kind: str = "") -> str:
        run_id = run_id or new_run_id()
        with self.tx() as c:
            c.execute("INSERT INTO runs (id, group_id, name, config, status, created, side_by_side, kind) "
                      "VALUES (?,?,?,?,?,?,?,?)",
                      (run_id, group_id or run_id, name, config_json, status, time.time(), int(side_by_side), kind))
        return run_id

    def run(self, run_id: str) -> dict:
        rows = self.query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"No run {run_id!r} in {self.path}: `python -m core runs` lists them.")
        return dict(rows[0])

    def set_status(self, run_id: str, status: str, reason: str = "", **fields) -> None:
        assert status in STATUSES
        cols = {"status": status, "reason": reason, **fields}
        if status in TERMINAL:
            cols.setdefault("ended", time.time())
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self.tx() as c:
            c.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*cols.values(), run_id))

    def log(self, run_id: str | None, message: str, level: str = "info", detail: str = "") -> None:
        with self.tx() as c:
            c.execute("INSERT INTO events (run_id, t, level, message, detail) VALUES (?,?,?,?,?)",
                      (run_id, time.time(), level, message[:2000], detail[:20000]))

    def end_run(self, run_id: str, status: str, reason: str = "", message: str = "", level: str = "info",
                detail: str = "", **fields) -> bool:
        """A running run ends: its status, reason and result fields and its closing
        event, in one transaction, only if it is still marked running (False if
        not: it had ended already, so calling this twice records one end)."""
        assert status in TERMINAL
        cols = {"status": status, "reason": reason, "ended": time.time(), **fields}
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self.tx() as c:
            if not c.execute(f"UPDATE runs SET {sets} WHERE id = ? AND status = 'running'",
                             (*cols.values(), run_id)).rowcount:
                return False
            c.execute("INSERT INTO events (run_id, t, level, message, detail) VALUES (?,?,?,?,?)",
                      (run_id, time.time(), level, (message or status)[:2000], detail[:20000]))
        return True

    def recover(self) -> list[str]:
        """Runs marked running whose process is gone become 'interrupted', with
        their metrics kept. Returns their ids."""
        lost = []
        for r in self.query("SELECT id, worker_pid, pid_start FROM runs WHERE status = 'running'"):
            if not pid_alive(r["worker_pid"], r["pid_start"]):
                lost.append(r["id"])
        for run_id in lost:
            with self.tx() as c:
                cur = c.execute("UPDATE runs SET status='interrupted', reason=?, ended=? WHERE id=? AND status='running'",
                                ("its process stopped (killed, out of memory or machine restart): resume it to continue",
                                 time.time(), run_id))
                if cur.rowcount:
                    c.execute("INSERT INTO events (run_id, t, level, message) VALUES (?,?,?,?)",
                              (run_id, time.time(), "warning", "marked interrupted: its process is gone"))
        return lost

    def request_cancel(self, run_id: str) -> str:
        """Ask a run to stop; a queued run is cancelled at once. Returns the
        status it had; an ended run is a StoreError."""
        with self.tx() as c:
            rows = c.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchall()
            if not rows:
                raise StoreError(f"No run {run_id!r} in {self.path}: `python -m core runs` lists them.")
            status = rows[0][0]
            if status in TERMINAL:
                raise StoreError(f"Run {run_id} already ended ({status}); nothing to cancel.")
            if status == "queued":
                c.execute("UPDATE runs SET status='cancelled', reason='cancelled before it started', ended=? WHERE id=?",
                          (time.time(), run_id))
            else:
                c.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
        return status

    def request_prune(self, run_id: str) -> bool:
        """A hyperparameter search's pruner stops a running trial: it stops at its
        next step like a cancel and ends 'pruned'. False if it is no longer running."""
        with self.tx() as c:
            n = c.execute("UPDATE runs SET cancel_requested = 2 WHERE id = ? AND status = 'running'", (run_id,)).rowcount
        return n == 1

    def prune_requested(self, run_id: str) -> bool:
        rows = self.query("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,))
        return bool(rows and rows[0][0] == 2)

    def cancel_requested(self, run_id: str) -> bool:
        rows = self.query("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,))
        return bool(rows and rows[0][0])

    def claim_next(self, pid: int) -> dict | None:
        """Atomically take the next queued run this worker may start: one run
        at a time, except runs of a side-by-side group, which share the device."""
        with self.tx() as c:
            running = c.execute("SELECT group_id, side_by_side FROM runs WHERE status = 'running'").fetchall()
            queued = c.execute("SELECT * FROM runs WHERE status = 'queued' ORDER BY created, id").fetchall()
            pick = None
            if not running:
                pick = queued[0] if queued else None
            elif all(r["side_by_side"] for r in running) and len({r["group_id"] for r in running}) == 1:
                group = running[0]["group_id"]
                pick = next((q for q in queued if q["group_id"] == group and q["side_by_side"]), None)
            if pick is None:
                return None
            c.execute("UPDATE runs SET status='running', worker_pid=?, pid_start=?, started=COALESCE(started, ?), "
                      "heartbeat=?, cancel_requested=0, reason='' WHERE id=?",
                      (pid, children.pid_start(pid), time.time(), time.time(), pick["id"]))
            return dict(pick)

    def delete_run(self, run_id: str) -> None:
        """Forget an ended run: its rows here and its folder of checkpoints."""
        import shutil

        r = self.run(run_id)
        with self.tx() as c:  # the status is tested in the delete itself: a run that started meanwhile stays
            if not c.execute(f"DELETE FROM runs WHERE id = ? AND status IN ({','.join('?' * len(TERMINAL))})",
                             (run_id, *TERMINAL)).rowcount:
                raise StoreError(f"Run {run_id} is {r['status'] if r['status'] not in TERMINAL else 'running'}: "
                                 "stop it before deleting it.")
        shutil.rmtree(paths.run_dir(run_id), ignore_errors=True)

    def truncate_after(self, run_id: str, epoch: int) -> None:
        """Drop metrics past `epoch` (a resume re-does them)."""
        with self.tx() as c:
            for table in ("step_metrics", "epoch_metrics", "layer_stats", "rank_metrics"):
                c.execute(f"DELETE FROM {table} WHERE run_id = ? AND epoch > ?", (run_id, epoch))
            c.execute("UPDATE runs SET epochs_done = ? WHERE id = ?", (epoch, run_id))

    # --- workers -------------------------------------------------------------

    def add_worker(self, pid: int, pid_start: str | None = None) -> None:
        """Register a worker: by its launcher (no start time known yet, never
        overwriting) or by the worker itself (with its start time)."""
        verb = "INSERT OR REPLACE" if pid_start else "INSERT OR IGNORE"
        with self.tx() as c:
            c.execute(f"{verb} INTO workers (pid, pid_start, started, heartbeat) VALUES (?,?,?,?)",
                      (pid, pid_start, time.time(), time.time()))

    def remove_worker(self, pid: int) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM workers WHERE pid = ?", (pid,))

    def live_workers(self) -> list[int]:
        """Pids of workers still alive; the dead ones are forgotten."""
        rows = self.query("SELECT pid, pid_start FROM workers")
        dead = [r["pid"] for r in rows if not pid_alive(r["pid"], r["pid_start"])]
        if dead:
            with self.tx() as c:
                c.executemany("DELETE FROM workers WHERE pid = ?", [(p,) for p in dead])
        return [r["pid"] for r in rows if r["pid"] not in dead]

    def queued(self) -> list[dict]:
        return [dict(r) for r in self.query("SELECT * FROM runs WHERE status = 'queued' ORDER BY created, id")]
