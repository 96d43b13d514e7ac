"""Background jobs: training that outlives the page and the terminal.

`launch` queues a run in the store and makes sure a worker process is alive.
A worker (`python -m core worker`, detached in its own session) claims queued
runs one at a time, trains each in its own process memory, and exits when the
queue is empty. Runs of a side-by-side group share the device: one worker per
run, the CPU cores split between them. A run with `processes > 1` is trained
by `torchrun` (DDP over that many processes), which the worker starts and waits for.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from typing import Sequence

from core import children, faults, paths
from core.errors import TLabError
from core.runs import storage, tensorboard
from core.runs.store import TERMINAL, Store, StoreError, StoreListener, format_exception, new_group_id
from core.train.config import RunConfig

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
IDLE_EXIT_SECONDS = 1.5


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# --- launching ---------------------------------------------------------------------


def check_processes_fit(cfg: RunConfig) -> None:
    """A run this machine's worker will start with `torchrun --nproc-per-node
    processes`: on CUDA it needs that many GPUs here."""
    if cfg.processes <= 1 or cfg.device not in ("cuda", "auto"):
        return
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and cfg.processes > gpus:
        raise TLabError(f"{cfg.processes} processes asked for, but this machine has {gpus} GPU(s): use at most {gpus} "
                        "(one process per GPU), or start the run on several machines with torchrun (see the README).")


def launch(cfg: RunConfig, store: Store | None = None, group_id: str | None = None,
           side_by_side: bool = False, start_worker: bool = True, kind: str = "") -> str:
    """Queue one run; returns its id at once. The caller checked the config
    (core.service.launching.prepare); the worker checks it again before training."""
    store = store or Store()
    run_id = store.add_run(cfg.to_json(), cfg.name, group_id, "queued", side_by_side=side_by_side, kind=kind)
    if start_worker:
        ensure_workers(store)
    return run_id


def launch_group(cfgs: Sequence[RunConfig], side_by_side: bool = False, store: Store | None = None,
                 kind: str = "") -> tuple[str, list[str]]:
    """Queue several runs under one group id (transfer vs scratch, races, sweeps);
    `kind` says which question the group answers. The caller checked the
    configs, all of them before any is queued (core.service.launching.prepare)."""
    store = store or Store()
    group_id = new_group_id()
    ids = [launch(c, store, group_id, side_by_side, start_worker=False, kind=kind) for c in cfgs]
    ensure_workers(store)
    return group_id, ids


def _spawn_worker(store: Store) -> int:
    home = paths.home().resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = children.core_env(TLAB_HOME=str(home))  # the worker must see the same store whatever its cwd
    with open(home / "worker.log", "ab") as logf:
        proc = children.start_detached(children.core_command("worker"), env, stdout=logf)
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
    store = store or Store()
    want = workers_wanted(store)
    live = store.live_workers()
    return [_spawn_worker(store) for _ in range(max(0, want - len(live)))]


# --- control ------------------------------------------------------------------------


def cancel(run_id: str, store: Store | None = None) -> str:
    """Ask a run to stop at its next step (a queued run is cancelled at once)."""
    return (store or Store()).request_cancel(run_id)


def resume(run_id: str, store: Store | None = None, processes: int | None = None) -> None:
    """Queue an interrupted, cancelled or failed run again; it continues from its
    last checkpoint (or from the start if it had none), on `processes`
    processes if given (a checkpoint resumes on any number of them)."""
    store = store or Store()
    r = store.run(run_id)
    if r["status"] not in ("interrupted", "cancelled", "failed", "pruned"):
        raise StoreError(f"Run {run_id} is {r['status']}: only interrupted, cancelled, failed or pruned runs can be resumed.")
    check_can_resume(run_id)
    cfg = RunConfig.from_json(r["config"])
    if processes is not None and processes != cfg.processes:
        from core.train.validate import validate  # here: it imports torch, which cancel, wait and runs never need

        cfg = validate(cfg.replace(processes=processes))
    check_processes_fit(cfg)
    store.set_status(run_id, "queued", "", ended=None, cancel_requested=0, config=cfg.to_json())
    store.log(run_id, "queued to resume" + (f" on {cfg.processes} processes" if cfg.processes > 1 else ""))
    ensure_workers(store)


def check_can_resume(run_id: str) -> None:
    """A TLabError when the run's checkpoint can't be continued from: slimmed
    (`python -m core slim` dropped its optimizer state) or damaged."""
    from core.train import checkpoint

    folder = paths.run_dir(run_id)
    if storage.slimmed_marker(folder).exists():
        raise StoreError(f"Run {run_id} can no longer resume: its checkpoint was slimmed (the optimizer state was "
                         "dropped to save space; the weights are kept, so it still predicts, evaluates and exports). "
                         "Launch it again (its config.toml has its settings) to train further.")
    if (folder / checkpoint.CHECKPOINT_NAME).exists():
        checkpoint.check_whole(folder / checkpoint.CHECKPOINT_NAME)


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


def execute(store: Store | None, run_id: str, listeners: tuple = (), ctx=None) -> dict | None:
    """Train a run already marked running; record how it ends. Under torchrun
    every process calls this: rank 0 (with the store) reads the run and hands its
    settings to the others, and alone records; the others return None."""
    from core.train import cache, distributed, engine

    ctx = ctx or distributed.SINGLE
    main = ctx.is_main
    run_dir = paths.run_dir(run_id)
    ckpt = run_dir / "checkpoint.pt"
    cfg = None
    from core.train.validate import validate  # here: it imports torch, which cancel, wait and runs never need

    try:
        config_json, resume = ctx.broadcast((store.run(run_id)["config"], ckpt.exists()) if main else None)
        cfg = validate(RunConfig.from_json(config_json))  # the worker's own check: the registries here and now
        if main:
            write_settings(run_dir, cfg)
            if resume:  # a damaged or slimmed checkpoint fails the run here, saying so, before any work
                check_can_resume(run_id)
        resume_from = ckpt if resume else None  # the listener drops metrics past it
        own = (StoreListener(store, run_id), *tensorboard.listeners(run_id), *_mlflow(store, run_id)) if main else ()
        trainer = engine.Trainer(cfg, run_dir, run_id, (*own, *listeners) if main else (),
                                 _CancelPoll(store, run_id) if main else None, ctx)
        with cache.lease(run_id):  # what it reads from the caches is not evicted while it runs
            result = trainer.run(resume_from=resume_from)
    except KeyboardInterrupt:
        if main:
            store.set_status(run_id, "cancelled", "interrupted from the keyboard: resume it to continue")
        raise
    except (Exception, distributed.Terminated) as e:
        return _surviving_sigterm(_end_after_error, store, run_id, cfg, e, main)
    if not main:
        return None
    if result.status == "failed":
        engine.release_memory()
    status, reason = result.status, result.reason
    if status == "cancelled" and store.prune_requested(run_id):
        status, reason = "pruned", f"pruned by the hyperparameter search after epoch {result.epochs}"
    ending = dict(status=status, reason=reason,
                  message=f"{status}" + (f": {reason}" if reason else "")
                  + (f", test accuracy {result.test_accuracy:.4f}" if result.test_accuracy is not None else ""),
                  result=json.dumps(result.to_dict()), test_accuracy=result.test_accuracy,
                  val_accuracy=result.val_accuracy, best_val_accuracy=result.best_val_accuracy, epochs_done=result.epochs)
    _surviving_sigterm(store.end_run, run_id, **ending)
    return store.run(run_id)


def _mlflow(store: Store, run_id: str) -> tuple:
    """The live MLflow listener, when MLFLOW_TRACKING_URI is set."""
    from core.runs import mlflow_log

    row = store.run(run_id)
    return mlflow_log.listeners(run_id, row["group_id"], row.get("kind", ""))


def write_settings(run_dir, cfg: RunConfig) -> None:
    """The run's settings as `config.toml` in its folder, for a person to read, diff and train again."""
    from core.train import runfile

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "config.toml.part"
    tmp.write_text(runfile.dumps(cfg), encoding="utf-8")
    tmp.replace(run_dir / "config.toml")


def _surviving_sigterm(record, *args, **kwargs):
    """`record(*args, **kwargs)`, called once more if torchrun's one SIGTERM
    (`distributed.Terminated`) lands while it runs. The handler raises at most
    once per process, and recording an end is one transaction that applies
    only to a run still marked running, so the end is recorded exactly once."""
    from core.train import distributed

    try:
        return record(*args, **kwargs)
    except distributed.Terminated:
        return record(*args, **kwargs)


def _end_after_error(store: Store | None, run_id: str, cfg: RunConfig | None, e: BaseException, main: bool) -> dict | None:
    """Record how a run that raised ended: failed, or interrupted when another
    process of it was lost (rank 0 alone records; the others return None).

    Under torchrun a lost process is noticed twice: this rank's collective
    fails, and torchrun's agent sends the survivors SIGTERM, which raises
    `Terminated` wherever the rank is, possibly right here. The handler raises
    at most once per process (`distributed.on_sigterm`), so the caller runs
    this through `_surviving_sigterm`: the end is recorded exactly once in
    every interleaving."""
    from core.train import distributed, engine

    lost = distributed.is_peer_failure(e)
    if not main:
        if lost:
            return None
        raise e
    first, tb = format_exception(e)
    traceback.clear_frames(e.__traceback__)  # the failed step's tensors go now, not with the exception
    faults.fire("record_end", None, run_id=run_id)
    if not lost:
        if cfg is not None and engine.is_out_of_memory(e):  # before the first step (model, feature cache): same advice
            first = engine.out_of_memory_reason(cfg)
        engine.release_memory()  # the next run in this worker starts with the memory given back
        store.end_run(run_id, "failed", first, message=f"failed: {first}", level="error", detail=tb)
        return store.run(run_id)
    # The backend's own words (a socket reset, a timeout) go to the event's detail, not the status line.
    reason = ("another process of this run stopped or stopped answering, so every process stopped: "
              "resume it to continue from the last checkpoint")
    store.end_run(run_id, "interrupted", reason, message=f"interrupted: a process of the run was lost ({first})",
                  level="warning", detail=tb)
    return store.run(run_id)


def run_foreground(cfg: RunConfig, listeners: tuple = (), store: Store | None = None) -> dict | None:
    """`python -m core train`: train here and now, recorded in the store like any
    run. Under torchrun, one process of the run: rank 0 records it and returns
    its row, the other processes return None. The caller checked `cfg`."""
    from core.train import distributed

    ctx = distributed.init(cfg.device)
    if ctx.enabled:
        return _run_as_rank(cfg, listeners, store, ctx)
    store = store or Store()
    pid = os.getpid()
    run_id = store.add_run(cfg.to_json(), cfg.name, status="running")
    store.set_status(run_id, "running", worker_pid=pid, pid_start=children.pid_start(pid), started=time.time())
    return execute(store, run_id, listeners)


def _run_as_rank(cfg: RunConfig, listeners: tuple, store: Store | None, ctx) -> dict | None:
    from core.train import distributed

    distributed.on_sigterm()
    try:
        ctx.check_same("settings", cfg.to_json())
        run_id = None
        if ctx.is_main:
            store = store or Store()
            pid = os.getpid()
            run_id = store.add_run(cfg.to_json(), cfg.name, status="running")
            store.set_status(run_id, "running", worker_pid=pid, pid_start=children.pid_start(pid), started=time.time())
        run_id = ctx.broadcast(run_id)
    except (Exception, distributed.Terminated) as e:
        if isinstance(e, TLabError) or not distributed.is_peer_failure(e):
            raise
        raise distributed.PeerLost(f"process 0 stopped before the run started (see its message): {e}") from None
    try:
        return execute(store if ctx.is_main else None, run_id, listeners if ctx.is_main else (), ctx)
    finally:
        distributed.shutdown()


def execute_rank(run_id: str) -> dict | None:
    """One process of a queued run the worker started under torchrun (`run-rank`).
    The worker names the run's device in the environment: every process must
    pick the same backend before it can hear anything from rank 0."""
    from core.train import distributed

    ctx = distributed.init(os.environ.get("TLAB_RUN_DEVICE", "auto"))
    distributed.on_sigterm()
    try:
        store = None
        if ctx.is_main:
            store = Store(recover=False)
            if store.run(run_id)["status"] != "running":  # started by hand (a cluster job), not by the worker
                _claim_by_hand(store, run_id)
        return execute(store, run_id, (), ctx)
    finally:
        distributed.shutdown()


def _claim_by_hand(store: Store, run_id: str) -> None:
    r = store.run(run_id)
    if r["status"] not in ("queued", "interrupted", "cancelled", "failed"):
        raise StoreError(f"Run {run_id} is {r['status']}: only a queued, interrupted, cancelled or failed run can be "
                         "continued with run-rank.")
    pid = os.getpid()
    store.set_status(run_id, "running", "", ended=None, cancel_requested=0, worker_pid=pid, pid_start=children.pid_start(pid))
    store.log(run_id, "continued by run-rank under torchrun")


def _execute_torchrun(store: Store, row: dict) -> None:
    """A run with processes > 1: `torchrun --nproc-per-node N -m core run-rank ID`,
    waited for; if its processes all ended without recording an end, the run
    is interrupted (resumable)."""
    from core.train import distributed

    cfg = RunConfig.from_json(row["config"])
    env = children.core_env(TLAB_HOME=str(paths.home().resolve()), TLAB_RUN_DEVICE=cfg.device)
    cmd = distributed.torchrun_command(cfg.processes, ["run-rank", row["id"]])
    store.log(row["id"], f"starting {cfg.processes} processes with torchrun")
    code = children.run_child(cmd, env)
    r = store.run(row["id"])
    if r["status"] == "running":
        store.set_status(row["id"], "interrupted", f"its processes stopped (torchrun exit code {code}): "
                                                   "resume it to continue from the last checkpoint")
        store.log(row["id"], f"torchrun exited with code {code} before the run ended", "warning")


def _thread_cap() -> int | None:
    """The user's cap on torch threads per run, from OMP_NUM_THREADS (the knob torch and every BLAS
    read); None when unset or not a positive whole number."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def _set_threads(store: Store, row: dict) -> int:
    """Runs of a side-by-side group split the CPU cores between them; OMP_NUM_THREADS, when set,
    caps each run's share (a machine shared with other work). Returns the count set."""
    import torch

    n = 1
    if row["side_by_side"]:
        n = store.query("SELECT COUNT(*) FROM runs WHERE group_id = ? AND status IN ('queued','running')",
                        (row["group_id"],))[0][0] or 1
    threads = max(1, _cores() // n)
    cap = _thread_cap()
    threads = min(threads, cap) if cap else threads
    torch.set_num_threads(threads)
    return threads


def worker_main() -> int:
    """The worker loop: claim, train, repeat; exit when nothing is left to claim."""
    store = Store()
    pid = os.getpid()
    store.add_worker(pid, children.pid_start(pid))
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
            threads = _set_threads(store, row)
            log.info("worker %d: run %s on %d torch thread(s)", pid, row["id"], threads)
            try:
                if RunConfig.from_json(row["config"]).processes > 1:
                    _execute_torchrun(store, row)
                else:
                    execute(store, row["id"])
            except StoreError as e:  # the store itself failed (disk full...): stop, the run is recovered later
                log.error("worker %d: %s", pid, e)
                return 1
    finally:
        try:
            store.remove_worker(pid)
        except TLabError:
            pass
