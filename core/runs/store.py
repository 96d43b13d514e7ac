"""The run store: one SQLite file (WAL) in the data folder.

Runs, step and epoch metrics, per-layer-group stats, and a short event log.
Writers are the training processes (through `StoreListener`); readers are the
CLI and the dashboard, which get pandas DataFrames. Metrics are keyed by
(run, step) and (run, epoch), so a resumed run rewrites what it re-does and
the series have neither gaps nor duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from core import paths
from core.errors import TLabError
from core.train.events import EpochEnd, LayerStats, Note, PlanChange, RunEnd, RunStart, Step, new_run_id

log = logging.getLogger(__name__)

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


def _pid_start(pid: int) -> str | None:
    """A process's start time (Linux), to tell a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    """Is this process running (not a zombie, not a reused pid)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc (macOS): os.kill's answer stands
    if fields[0] == "Z":
        return False  # exited, not yet reaped by its parent
    return start is None or fields[19] == start


def _explain(e: Exception, path: Path) -> StoreError:
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


class Store:
    """A handle on the run store. Cheap to open; safe to share between threads."""

    def __init__(self, path: Path | str | None = None, recover: bool = True):
        self.path = Path(path) if path else db_path()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _explain(e, self.path) from None
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
        except sqlite3.DatabaseError as e:
            if "not a database" not in str(e) and "malformed" not in str(e):
                raise _explain(e, self.path) from None
            raise StoreError(f"{self.path} is not a Transfer Learning Lab run store (not a readable SQLite database). "
                             "It was left untouched: move it away, or set TLAB_HOME to another folder.") from None
        if recover:
            self.recover()

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
                raise _explain(e, self.path) from None

    def query(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self.conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as e:
                raise _explain(e, self.path) from None

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
                      (pid, _pid_start(pid), time.time(), time.time(), pick["id"]))
            return dict(pick)

    def delete_run(self, run_id: str) -> None:
        """Forget an ended run: its rows here and its folder of checkpoints."""
        import shutil

        r = self.run(run_id)
        if r["status"] not in TERMINAL:
            raise StoreError(f"Run {run_id} is {r['status']}: stop it before deleting it.")
        with self.tx() as c:
            c.execute("DELETE FROM runs WHERE id = ?", (run_id,))
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

    # --- readers: DataFrames for charts ---------------------------------------

    def runs(self, group_id: str | None = None):
        import pandas as pd

        sql = ("SELECT id, group_id, kind, name, status, reason, device, world_size, created, started, ended, epochs_done, "
               "best_val_accuracy, val_accuracy, test_accuracy, result, config FROM runs")
        args: tuple = ()
        if group_id:
            sql += " WHERE group_id = ?"
            args = (group_id,)
        df = pd.DataFrame([dict(r) for r in self.query(sql + " ORDER BY created, id", args)],
                          columns=["id", "group_id", "kind", "name", "status", "reason", "device", "world_size", "created", "started",
                                   "ended", "epochs_done", "best_val_accuracy", "val_accuracy", "test_accuracy",
                                   "result", "config"])
        configs = [json.loads(c) for c in df["config"]]
        for key in ("backbone", "strategy", "dataset", "epochs", "labels_per_class", "seed", "teacher"):
            # object dtype: an unset setting stays None (pandas would make it NaN, which is truthy)
            df[key] = pd.Series([c.get(key) for c in configs], index=df.index, dtype=object)
        results = [json.loads(r) if isinstance(r, str) and r else {} for r in df["result"]]  # NULL may arrive as NaN
        df["trainable_params"] = [r.get("trainable_params") for r in results]
        df["seconds"] = [r.get("seconds") for r in results]
        return df.drop(columns=["result"])

    def metrics(self, run_ids: Iterable[str], kind: str = "epoch", max_points: int | None = None):
        """Epoch (or step, or per-process "rank") metrics of several runs, long format with a run_id column.

        `max_points` (steps only): a run with more logged steps comes back as
        about that many evenly spaced ones, its first and last kept. SQLite
        picks them in one pass over the run's rows (a modulo on the step
        number; averaging them in a GROUP BY costs ten times more), so a page
        drawing 20 runs of 25,000 steps reads 10,000 rows, not half a million."""
        import pandas as pd

        ids = list(run_ids)
        table = {"epoch": "epoch_metrics", "step": "step_metrics", "rank": "rank_metrics"}[kind]
        order = "epoch" if kind == "epoch" else "step, rank" if kind == "rank" else "step"
        if not ids:
            return pd.DataFrame()
        if kind == "step" and max_points:
            frames = [self._step_buckets(run_id, int(max_points)) for run_id in ids]
            frames = [f for f in frames if len(f)]
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        marks = ",".join("?" * len(ids))
        rows = self.query(f"SELECT * FROM {table} WHERE run_id IN ({marks}) ORDER BY run_id, {order}", ids)
        return pd.DataFrame([dict(r) for r in rows])

    def _step_buckets(self, run_id: str, max_points: int):
        import pandas as pd

        # The first two and the last step: index look-ups, no scan. Steps are logged
        # every `every` steps (10 on a GPU), so the stride is a multiple of that.
        first = [r["step"] for r in self.query("SELECT step FROM step_metrics WHERE run_id = ? ORDER BY step LIMIT 2", (run_id,))]
        if not first:
            return pd.DataFrame()
        hi = self.query("SELECT MAX(step) AS s FROM step_metrics WHERE run_id = ?", (run_id,))[0]["s"]
        lo, every = first[0], (first[1] - first[0] if len(first) > 1 else 1)
        logged = (hi - lo) // max(1, every) + 1
        stride = every * max(1, -(-logged // max(2, max_points)))
        # The wanted steps as a list: SQLite looks each up in the primary key
        # instead of scanning the run's rows (a modulo filter reads all 25,000).
        wanted = json.dumps(sorted({*range(lo, hi + 1, stride), hi}))
        rows = self.query("SELECT * FROM step_metrics WHERE run_id = ? AND step IN (SELECT value FROM json_each(?)) "
                          "ORDER BY step", (run_id, wanted))
        return pd.DataFrame([tuple(r) for r in rows], columns=rows[0].keys()) if rows else pd.DataFrame()

    def layer_stats(self, run_id: str):
        import pandas as pd

        rows = self.query("SELECT epoch, grp AS \"group\", position, frozen, lr, params, grad_norm, weight_change "
                          "FROM layer_stats WHERE run_id = ? ORDER BY epoch, position", (run_id,))
        df = pd.DataFrame([dict(r) for r in rows])
        if not df.empty:
            df["frozen"] = df["frozen"].astype(bool)
        return df

    def events(self, run_id: str):
        import pandas as pd

        rows = self.query("SELECT t, level, message, detail FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        return pd.DataFrame([dict(r) for r in rows], columns=["t", "level", "message", "detail"])


class StoreListener:
    """Writes engine events to the store, batched: step metrics are buffered
    and committed together with the epoch they belong to, or every
    `flush_seconds`, whichever comes first."""

    def __init__(self, store: Store, run_id: str, flush_seconds: float = 2.0):
        self.store, self.run_id, self.flush_seconds = store, run_id, flush_seconds
        self.steps: list[tuple] = []
        self.rank_steps: list[tuple] = []
        self.last_flush = time.monotonic()

    def __call__(self, event) -> None:
        if isinstance(event, Step):
            self.steps.append((self.run_id, event.step, event.epoch, event.loss, event.lr,
                               event.images_per_second, time.time()))
            self.rank_steps.extend((self.run_id, event.step, r, event.epoch, ips)
                                   for r, ips in enumerate(event.rank_images_per_second))
            if time.monotonic() - self.last_flush >= self.flush_seconds:
                self.flush()
        elif isinstance(event, RunStart):
            self.store.truncate_after(self.run_id, event.start_epoch - 1)
            with self.store.tx() as c:
                c.execute("UPDATE runs SET device=?, steps_per_epoch=?, class_names=?, plan=?, heartbeat=?, world_size=? "
                          "WHERE id=?",
                          (event.device, event.steps_per_epoch, json.dumps(list(event.class_names)),
                           json.dumps(event.plan.rows()), time.time(), event.world_size, self.run_id))
            sizes = ", ".join(f"{k} {v}" for k, v in event.sizes.items() if v or k != "skipped")
            self.store.log(self.run_id, f"{'resumed at' if event.start_epoch > 1 else 'started'} epoch {event.start_epoch} "
                                        f"on {event.device}"
                                        + (f" x {event.world_size} processes" if event.world_size > 1 else "")
                                        + f": {sizes} images")
        elif isinstance(event, PlanChange):
            with self.store.tx() as c:
                c.execute("UPDATE runs SET plan=? WHERE id=?", (json.dumps(event.plan.rows()), self.run_id))
            self.store.log(self.run_id, f"epoch {event.epoch}: plan changed, {event.plan.trainable_params:,} trainable parameters")
        elif isinstance(event, EpochEnd):
            self.flush(epoch=event)
        elif isinstance(event, LayerStats):
            with self.store.tx() as c:
                c.executemany(
                    "INSERT OR REPLACE INTO layer_stats VALUES (?,?,?,?,?,?,?,?,?)",
                    [(self.run_id, event.epoch, r["group"], i, int(r["frozen"]), r["lr"], r["params"],
                      r["grad_norm"], r["weight_change"]) for i, r in enumerate(event.rows)])
        elif isinstance(event, Note):
            self.store.log(self.run_id, event.message)
        elif isinstance(event, RunEnd):
            self.flush()

    def flush(self, epoch=None) -> None:
        steps, self.steps = self.steps, []
        rank_steps, self.rank_steps = self.rank_steps, []
        with self.store.tx() as c:
            if steps:
                c.executemany("INSERT OR REPLACE INTO step_metrics VALUES (?,?,?,?,?,?,?)", steps)
            if rank_steps:
                c.executemany("INSERT OR REPLACE INTO rank_metrics VALUES (?,?,?,?,?)", rank_steps)
            if epoch is not None:
                c.execute("INSERT OR REPLACE INTO epoch_metrics VALUES (?,?,?,?,?,?,?,?,?)",
                          (self.run_id, epoch.epoch, epoch.train_loss, epoch.train_accuracy, epoch.val_loss,
                           epoch.val_accuracy, epoch.seconds, epoch.images_per_second, time.time()))
                c.execute("UPDATE runs SET epochs_done=?, val_accuracy=?, best_val_accuracy=MAX(COALESCE(best_val_accuracy, 0), ?) "
                          "WHERE id=?", (epoch.epoch, epoch.val_accuracy, epoch.val_accuracy, self.run_id))
            c.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), self.run_id))
        self.last_flush = time.monotonic()


def new_group_id() -> str:
    return "g-" + uuid.uuid4().hex[:10]


def format_exception(e: BaseException) -> tuple[str, str]:
    """(first line of the error, full traceback) for a failed run."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if not isinstance(e, TLabError):
        first = f"{type(e).__name__}: {first}"
    return first[:500], "".join(traceback.format_exception(type(e), e, e.__traceback__))
