"""Background jobs: training that outlives the page and the terminal.

`launch` queues a run in the store and makes sure a worker process is alive.
A worker (`python -m core worker`, detached in its own session) claims queued
runs one at a time, trains each in its own process memory, and exits when the
queue is empty. Runs of a side-by-side group share the device: one worker per
run, the CPU cores split between them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from core import paths
from core.config import RunConfig, validate
from core.errors import TLabError
from core.store import TERMINAL, Store, StoreError, StoreListener, _pid_start, format_exception, new_group_id

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
IDLE_EXIT_SECONDS = 1.5
_children: list[subprocess.Popen] = []  # reaped on each ensure_workers call: no zombies in a long-lived caller


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# --- launching ---------------------------------------------------------------------


def launch(cfg: RunConfig, store: Store | None = None, group_id: str | None = None,
           side_by_side: bool = False, start_worker: bool = True, kind: str = "") -> str:
    """Queue one run; returns its id at once."""
    validate(cfg)
    store = store or Store()
    run_id = store.add_run(cfg.to_json(), cfg.name, group_id, "queued", side_by_side=side_by_side, kind=kind)
    if start_worker:
        ensure_workers(store)
    return run_id


def launch_group(cfgs: Sequence[RunConfig], side_by_side: bool = False, store: Store | None = None,
                 kind: str = "") -> tuple[str, list[str]]:
    """Queue several runs under one group id (transfer vs scratch, races, sweeps);
    `kind` says which question the group answers. All configs are validated
    before any is queued."""
    for cfg in cfgs:
        validate(cfg)
    store = store or Store()
    group_id = new_group_id()
    ids = [launch(c, store, group_id, side_by_side, start_worker=False, kind=kind) for c in cfgs]
    ensure_workers(store)
    return group_id, ids


def _spawn_worker(store: Store) -> int:
    home = paths.home().resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["TLAB_HOME"] = str(home)  # the worker must see the same store whatever its cwd
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with open(home / "worker.log", "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "core", "worker"], env=env, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _children.append(proc)
    store.add_worker(proc.pid)  # counted at once, so ten quick launches start one worker, not ten
    return proc.pid


def workers_wanted(store: Store) -> int:
    """How many workers the queue can use right now."""
    queued = store.queued()
    if not queued:
        return 0
    running = store.query("SELECT group_id, side_by_side FROM runs WHERE status = 'running'")
    head = queued[0]
    if running:
        group = running[0]["group_id"]
        if all(r["side_by_side"] for r in running) and all(r["group_id"] == group for r in running):
            more = sum(1 for q in queued if q["group_id"] == group and q["side_by_side"])
            return len(running) + more if more else 1
        return 1
    if head["side_by_side"]:
        return sum(1 for q in queued if q["group_id"] == head["group_id"] and q["side_by_side"])
    return 1


def ensure_workers(store: Store | None = None) -> list[int]:
    """Start workers for the queued runs if too few are alive; returns new pids."""
    global _children
    _children = [p for p in _children if p.poll() is None]
    store = store or Store()
    want = workers_wanted(store)
    live = store.live_workers()
    return [_spawn_worker(store) for _ in range(max(0, want - len(live)))]


# --- control ------------------------------------------------------------------------


def cancel(run_id: str, store: Store | None = None) -> str:
    """Ask a run to stop at its next step (a queued run is cancelled at once)."""
    return (store or Store()).request_cancel(run_id)


def resume(run_id: str, store: Store | None = None) -> None:
    """Queue an interrupted, cancelled or failed run again; it continues from its
    last checkpoint (or from the start if it had none)."""
    store = store or Store()
    r = store.run(run_id)
    if r["status"] not in ("interrupted", "cancelled", "failed"):
        raise StoreError(f"Run {run_id} is {r['status']}: only interrupted, cancelled or failed runs can be resumed.")
    store.set_status(run_id, "queued", "", ended=None, cancel_requested=0)
    store.log(run_id, "queued to resume")
    ensure_workers(store)


def wait(run_id: str, store: Store | None = None, timeout: float | None = None) -> dict:
    """Block until the run ends; returns its row (with 'result' decoded)."""
    store = store or Store()
    deadline = None if timeout is None else time.monotonic() + timeout
    last_check = 0.0
    while True:
        r = store.run(run_id)
        if r["status"] in TERMINAL:
            r["result"] = json.loads(r["result"]) if r["result"] else None
            return r
        if time.monotonic() - last_check > 5:  # a worker may have died: recover, restart the queue
            store.recover()
            ensure_workers(store)
            last_check = time.monotonic()
        if deadline is not None and time.monotonic() > deadline:
            raise TLabError(f"Run {run_id} is still {r['status']} after {timeout:g}s.")
        time.sleep(POLL_SECONDS)


# --- executing a run (in a worker, or in the foreground) ------------------------------


class _CancelPoll:
    """should_stop for the engine: reads the store at most every POLL_SECONDS."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id, self.last, self.value = store, run_id, 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.value and now - self.last >= POLL_SECONDS:
            self.last = now
            self.value = self.store.cancel_requested(self.run_id)
        return self.value


def execute(store: Store, run_id: str, listeners: tuple = ()) -> dict:
    """Train a run already marked running by this process; record how it ends."""
    from core import engine

    row = store.run(run_id)
    cfg = None
    try:
        cfg = RunConfig.from_json(row["config"])
        run_dir = paths.run_dir(run_id)
        ckpt = run_dir / "checkpoint.pt"
        resume_from = ckpt if ckpt.exists() else None  # the listener drops metrics past it
        trainer = engine.Trainer(cfg, run_dir, run_id, (StoreListener(store, run_id), *listeners), _CancelPoll(store, run_id))
        result = trainer.run(resume_from=resume_from)
    except KeyboardInterrupt:
        store.set_status(run_id, "cancelled", "interrupted from the keyboard: resume it to continue")
        raise
    except Exception as e:
        first, tb = format_exception(e)
        if cfg is not None and engine.is_out_of_memory(e):  # before the first step (model, feature cache): same advice
            first = engine.out_of_memory_reason(cfg)
        del e
        engine.release_memory()  # the next run in this worker starts with the memory given back
        store.log(run_id, f"failed: {first}", "error", tb)
        store.set_status(run_id, "failed", first)
        return store.run(run_id)
    if result.status == "failed":
        engine.release_memory()
    store.set_status(run_id, result.status, result.reason, result=json.dumps(result.to_dict()),
                     test_accuracy=result.test_accuracy, val_accuracy=result.val_accuracy,
                     best_val_accuracy=result.best_val_accuracy, epochs_done=result.epochs)
    store.log(run_id, f"{result.status}" + (f": {result.reason}" if result.reason else "")
              + (f", test accuracy {result.test_accuracy:.4f}" if result.test_accuracy is not None else ""))
    return store.run(run_id)


def run_foreground(cfg: RunConfig, listeners: tuple = (), store: Store | None = None) -> dict:
    """`python -m core train`: train here and now, recorded in the store like any run."""
    validate(cfg)
    store = store or Store()
    pid = os.getpid()
    run_id = store.add_run(cfg.to_json(), cfg.name, status="running")
    store.set_status(run_id, "running", worker_pid=pid, pid_start=_pid_start(pid), started=time.time())
    return execute(store, run_id, listeners)


def _set_threads(store: Store, row: dict) -> None:
    """Runs of a side-by-side group split the CPU cores between them."""
    import torch

    n = 1
    if row["side_by_side"]:
        n = store.query("SELECT COUNT(*) FROM runs WHERE group_id = ? AND status IN ('queued','running')",
                        (row["group_id"],))[0][0] or 1
    torch.set_num_threads(max(1, _cores() // n))


def worker_main() -> int:
    """The worker loop: claim, train, repeat; exit when nothing is left to claim."""
    store = Store()
    pid = os.getpid()
    store.add_worker(pid, _pid_start(pid))
    log.info("worker %d started on %s", pid, store.path)
    idle_since = None
    try:
        while True:
            store.recover()
            row = store.claim_next(pid)
            if row is None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                    return 0
                time.sleep(POLL_SECONDS)
                continue
            idle_since = None
            _set_threads(store, row)
            log.info("worker %d: run %s", pid, row["id"])
            try:
                execute(store, row["id"])
            except StoreError as e:  # the store itself failed (disk full...): stop, the run is recovered later
                log.error("worker %d: %s", pid, e)
                return 1
    finally:
        try:
            store.remove_worker(pid)
        except TLabError:
            pass
