"""The engine's events written to the run store, and how a failed run's
error is recorded. The engine knows nothing of the store: the worker hands
the trainer a `StoreListener` as one of its listeners."""

from __future__ import annotations

import json
import time
import traceback
import uuid

from core.errors import TLabError
from core.train.events import EpochEnd, LayerStats, Note, PlanChange, RunEnd, RunStart, Step


class StoreListener:
    """Writes engine events to the store, batched: step metrics are buffered
    and committed together with the epoch they belong to, or every
    `flush_seconds`, whichever comes first."""

    def __init__(self, store, run_id: str, flush_seconds: float = 2.0):
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
