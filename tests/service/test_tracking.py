"""MLflow: a real run exported to a real local MLflow file store and read back
through MLflow's client (params, metrics with their steps, tags, artifacts), the
same run logged live when MLFLOW_TRACKING_URI is set, and a clear message
when MLflow is not installed."""

from __future__ import annotations

import sys

import pytest

from core.cli.main import main as cli_main
from core.runs import jobs
from core.runs.store import Store
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow  # a real run, logged live and exported: ~10 s
def test_export_and_live_logging_read_back_through_mlflows_client(isolated_home, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    live_uri = f"sqlite:///{tmp_path / 'live.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_uri)
    cfg = RunConfig(backbone="mlp", strategy="scratch", image_size=16, epochs=2, device="cpu", labels_per_class=3, name="tiny")
    row = jobs.run_foreground(cfg)
    assert row["status"] == "finished"
    run_id, store = row["id"], Store()
    steps = store.query("SELECT step, loss FROM step_metrics WHERE run_id=? ORDER BY step", (run_id,))

    # Live: the run is in the tracking store named by MLFLOW_TRACKING_URI, finished, with its steps.
    live = MlflowClient(live_uri)
    (lr,) = live.search_runs([live.get_experiment_by_name("transfer-learning-lab").experiment_id])
    assert lr.info.status == "FINISHED" and lr.data.tags["tlab.run_id"] == run_id
    assert [m.step for m in live.get_metric_history(lr.info.run_id, "train/loss")] == [r["step"] for r in steps]

    # Export to another store, named on the command line.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli_main(["export-mlflow", run_id, "--tracking-uri", uri, "--experiment", "lab"]) == 0
    c = MlflowClient(uri)
    (r,) = c.search_runs([c.get_experiment_by_name("lab").experiment_id])
    assert r.info.status == "FINISHED"
    assert r.data.params["backbone"] == "mlp" and r.data.params["epochs"] == "2" and r.data.params["lr"] == "none"
    assert {k: r.data.tags[k] for k in ("backbone", "strategy", "group", "tlab.run_id")} == \
        {"backbone": "mlp", "strategy": "scratch", "group": row["group_id"], "tlab.run_id": run_id}
    history = c.get_metric_history(r.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(s["step"], pytest.approx(s["loss"])) for s in steps]
    assert [m.step for m in c.get_metric_history(r.info.run_id, "epoch/val_accuracy")] == [1, 2]
    assert r.data.metrics["final/test_accuracy"] == pytest.approx(row["test_accuracy"])
    arts = {a.path for a in c.list_artifacts(r.info.run_id)} | {a.path for a in c.list_artifacts(r.info.run_id, "checkpoints")}
    assert {"checkpoints/checkpoint.pt", "config.toml", f"{run_id}-pt.zip"} <= arts

    # Exported twice: not logged twice.
    assert cli_main(["export-mlflow", run_id, "--tracking-uri", uri, "--experiment", "lab", "--json"]) == 0
    assert '"skipped": "already logged"' in capsys.readouterr().out
    assert len(c.search_runs([c.get_experiment_by_name("lab").experiment_id])) == 1


def test_without_mlflow_the_command_says_how_to_add_it(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    Store().add_run(RunConfig().to_json(), status="finished", run_id="r1")
    assert cli_main(["export-mlflow", "r1"]) == 2
    err = capsys.readouterr().err
    assert "MLflow is not installed: `pip install mlflow`" in err and "Traceback" not in err
