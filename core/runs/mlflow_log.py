"""Runs in MLflow, through MLflow's own client (an optional extra:
`pip install mlflow`; the lab runs without it).

- `log_run` writes one ended run from the store: its settings as params, its
  step and epoch metrics with their steps, its final metrics, tags (backbone,
  strategy, group, kind, dataset, the lab's run id) and files as artifacts.
- `LiveListener` does the same while a run trains, when MLFLOW_TRACKING_URI
  is set (the worker and `train` attach it; the engine knows nothing of it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from core import paths
from core.errors import TLabError
from core.train.events import EpochEnd, RunEnd, RunStart, Step

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "transfer-learning-lab"
RUN_ID_TAG = "tlab.run_id"
BATCH = 1000  # MLflow takes at most 1,000 metrics and 100 params per log_batch
STATUS = {"finished": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "interrupted": "KILLED", "pruned": "KILLED"}


class MlflowMissing(TLabError):
    pass


def client(tracking_uri: str | None):
    """MLflow's client for `tracking_uri` (or $MLFLOW_TRACKING_URI, or an mlruns folder in the data folder)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MlflowMissing("MLflow is not installed: `pip install mlflow` (an optional extra; the lab runs "
                            "without it), then run this again.") from None
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    return MlflowClient(tracking_uri=uri), uri


def default_uri() -> str:
    """An SQLite tracking store in the data folder (MLflow 3 keeps its file store for old data only)."""
    home = paths.home().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def experiment_id(c, name: str) -> str:
    """The experiment's id, made if new. For a local store (SQLite, a folder) its artifacts go to the
    data folder's mlartifacts/, not MLflow's default ./mlartifacts in whatever folder the command ran from."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    local = c.tracking_uri.split(":", 1)[0] in ("sqlite", "file") or "://" not in c.tracking_uri
    where = (paths.home().resolve() / "mlartifacts").as_uri() if local else None
    return c.create_experiment(name, artifact_location=where)


def params_of(config: dict) -> list:
    from mlflow.entities import Param

    return [Param(k, "none" if v is None else str(v)) for k, v in sorted(config.items())]


def tags_of(config: dict, run_id: str, group_id: str = "", kind: str = "") -> dict:
    return {RUN_ID_TAG: run_id, "backbone": str(config.get("backbone")), "strategy": str(config.get("strategy")),
            "dataset": str(config.get("dataset")), "group": group_id or run_id, "kind": kind or "single",
            "mlflow.runName": str(config.get("name") or run_id)}


def _log_batches(c, mlflow_run: str, metrics: list = (), params: list = ()) -> None:
    metrics, params = list(metrics), list(params)
    for i in range(0, len(params), 100):
        c.log_batch(mlflow_run, params=params[i:i + 100])
    for i in range(0, len(metrics), BATCH):
        c.log_batch(mlflow_run, metrics=metrics[i:i + BATCH])


def already_logged(c, exp_id: str, run_id: str) -> str | None:
    found = c.search_runs([exp_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'", max_results=1)
    return found[0].info.run_id if found else None


def log_run(c, exp_id: str, store, run_id: str, artifacts: list[Path]) -> dict:
    """One ended run of the store into MLflow; what was logged."""
    from mlflow.entities import Metric

    row = store.run(run_id)
    config = json.loads(row["config"])
    created = c.create_run(exp_id, start_time=int(row["created"] * 1000),
                           tags=tags_of(config, run_id, row["group_id"], row.get("kind", "")))
    mid = created.info.run_id
    ms = lambda t: int((t or row["created"]) * 1000)  # noqa: E731
    metrics = []
    for r in store.query("SELECT step, loss, lr, images_per_second, t FROM step_metrics WHERE run_id=? ORDER BY step", (run_id,)):
        metrics += [Metric("train/loss", r["loss"], ms(r["t"]), r["step"]), Metric("train/lr", r["lr"], ms(r["t"]), r["step"])]
    for r in store.query("SELECT * FROM epoch_metrics WHERE run_id=? ORDER BY epoch", (run_id,)):
        metrics += [Metric(f"epoch/{k}", r[k], ms(r["t"]), r["epoch"]) for k in
                    ("train_loss", "train_accuracy", "val_loss", "val_accuracy") if r[k] is not None]
    for r in store.query("SELECT * FROM layer_stats WHERE run_id=? ORDER BY epoch, position", (run_id,)):
        metrics += [Metric(f"layers/{k}/{r['grp']}", r[k], ms(None), r["epoch"]) for k in ("grad_norm", "weight_change")
                    if r[k] is not None]
    end = ms(row["ended"])
    metrics += [Metric(f"final/{k}", row[k], end, row["epochs_done"] or 0)
                for k in ("test_accuracy", "best_val_accuracy", "val_accuracy") if row[k] is not None]
    _log_batches(c, mid, metrics, params_of(config))
    for a in artifacts:
        c.log_artifact(mid, str(a), artifact_path="checkpoints" if a.suffix == ".pt" else None)
    c.set_terminated(mid, STATUS.get(row["status"], "FINISHED"), end_time=end)
    return {"run_id": run_id, "mlflow_run_id": mid, "metrics": len(metrics), "artifacts": len(artifacts)}


class LiveListener:
    """Engine events -> an MLflow run, while the run trains (MLFLOW_TRACKING_URI set).
    A failure (the tracking server gone) logs one warning and stops: the store is the record."""

    def __init__(self, run_id: str, group_id: str = "", kind: str = ""):
        self.run_id, self.group_id, self.kind = run_id, group_id, kind
        self.c = self.mid = None
        self.pending: list = []
        self.last = time.monotonic()
        self.failed = False

    def __call__(self, event) -> None:
        if self.failed:
            return
        try:
            self._handle(event)
        except Exception as e:
            self.failed = True
            log.warning("MLflow logging for run %s stopped: %s", self.run_id, e)

    def _handle(self, event) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if isinstance(event, RunStart):
            import dataclasses

            self.c, _ = client(None)
            config = dataclasses.asdict(event.config)
            exp = experiment_id(self.c, os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
            self.mid = self.c.create_run(exp, tags=tags_of(config, self.run_id, self.group_id, self.kind)).info.run_id
            _log_batches(self.c, self.mid, params=params_of(config))
        elif self.mid is None:
            return
        elif isinstance(event, Step):
            self.pending += [Metric("train/loss", event.loss, now, event.step), Metric("train/lr", event.lr, now, event.step)]
            if time.monotonic() - self.last > 5:
                self.flush()
        elif isinstance(event, EpochEnd):
            self.pending += [Metric(f"epoch/{k}", getattr(event, k), now, event.epoch)
                             for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")]
            self.flush()
        elif isinstance(event, RunEnd):
            r = event.result
            self.pending += [Metric(f"final/{k}", getattr(r, k), now, r.epochs) for k in
                             ("test_accuracy", "best_val_accuracy", "val_accuracy") if getattr(r, k) is not None]
            self.flush()
            self.c.set_terminated(self.mid, STATUS.get(event.status, "FINISHED"))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.last = time.monotonic()
        _log_batches(self.c, self.mid, pending)


def listeners(run_id: str, group_id: str = "", kind: str = "") -> tuple:
    """The live MLflow listener when MLFLOW_TRACKING_URI is set and MLflow is installed."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return ()
    try:
        import mlflow  # noqa: F401
    except ImportError:
        log.warning("MLFLOW_TRACKING_URI is set but MLflow is not installed: `pip install mlflow` to log runs live.")
        return ()
    return (LiveListener(run_id, group_id, kind),)
