"""Runs exported to MLflow (`python -m core export-mlflow`): each run's
params, metrics with their steps, tags, checkpoints, settings and export
bundle, through MLflow's client (an optional extra: `pip install mlflow`)."""

from __future__ import annotations

from pathlib import Path

from core import paths
from core.runs import mlflow_log
from core.runs.schema import TERMINAL
from core.runs.store import Store


def _artifacts(run_id: str) -> list[Path]:
    """The run's checkpoints and settings, and an export bundle (the pt one is made if none exists yet)."""
    from core.insight import bundle
    from core.train.checkpoint import load_run_model

    run_dir = paths.run_dir(run_id)
    files = sorted(p for p in run_dir.glob("*.pt") if p.is_file()) + [p for p in [run_dir / "config.toml"] if p.is_file()]
    exports = paths.home() / "exports"
    made = sorted(exports.glob(f"{run_id}-*.zip")) if exports.is_dir() else []
    if not made and (run_dir / "checkpoint.pt").is_file():
        made = [bundle.write(load_run_model(run_dir), "pt", exports / bundle.file_name(run_id, "pt"), {"run_id": run_id})]
    return files + made


def export_runs(run_ids: list[str], tracking_uri: str | None = None, experiment: str | None = None) -> dict:
    """Log ended runs to MLflow; a run logged there before (same lab run id) is not logged twice."""
    c, uri = mlflow_log.client(tracking_uri)
    store = Store()
    for r in run_ids:
        status = store.run(paths.check_run_id(r))["status"]
        if status not in TERMINAL:
            from core.errors import TLabError

            raise TLabError(f"Run {r} is {status}: export it to MLflow once it has ended.")
    name = experiment or mlflow_log.DEFAULT_EXPERIMENT
    exp = mlflow_log.experiment_id(c, name)
    out = []
    for r in run_ids:
        before = mlflow_log.already_logged(c, exp, r)
        if before:
            out.append({"run_id": r, "mlflow_run_id": before, "metrics": 0, "artifacts": 0, "skipped": "already logged"})
            continue
        out.append(mlflow_log.log_run(c, exp, store, r, _artifacts(r)))
    return {"tracking_uri": uri, "experiment": name, "runs": out}
