"""The SQLite run store: schema, batching, readers, and files that are not ours."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from helpers import run_cli
from core.runs import jobs, store as store_mod
from core.runs.store import Store, StoreError, StoreListener
from core.train import events
from core.train.config import RunConfig


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_store_is_wal_with_schema_version_and_our_id(isolated_home):
    s = Store()
    assert s.path == isolated_home / "tlab.sqlite"
    assert s.query("PRAGMA journal_mode")[0][0] == "wal"
    assert s.query("PRAGMA user_version")[0][0] == store_mod.SCHEMA_VERSION
    assert s.query("PRAGMA application_id")[0][0] == store_mod.APPLICATION_ID
    tables = {r[0] for r in s.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "step_metrics", "epoch_metrics", "layer_stats", "events", "workers"} <= tables
    Store()  # reopening migrates nothing and loses nothing


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
def test_foreground_training_fills_every_table_and_readers_give_dataframes(isolated_home, one_thread):
    # Every table filled is the claim, not accuracy: 5 labels per class at 16 px, 5 steps an epoch.
    row = jobs.run_foreground(RunConfig(backbone="efficientnet_lite0", strategy="partial", freeze_stages=3,
                                        epochs=2, image_size=16, batch_size=10, labels_per_class=5,
                                        val_fraction=0.05, test_fraction=0.05, device="cpu", name="lite-partial"))
    s = Store()
    runs = s.runs()
    assert list(runs["id"]) == [row["id"]] and runs.loc[0, "status"] == "finished"
    assert runs.loc[0, "backbone"] == "efficientnet_lite0" and runs.loc[0, "name"] == "lite-partial"
    epochs = s.metrics([row["id"]])
    assert list(epochs["epoch"]) == [1, 2] and epochs["val_accuracy"].between(0, 1).all()
    steps = s.metrics([row["id"]], "step")
    assert len(steps) == 2 * row["steps_per_epoch"] and (steps["loss"] > 0).all()
    stats = s.layer_stats(row["id"])
    assert len(stats) == 2 * 10  # 10 layer groups of Lite0, two epochs
    first = stats[stats["epoch"] == 1].sort_values("position")
    assert first["group"].iloc[0] == "stem" and first["group"].iloc[-1] == "head"
    assert first[first["group"] == "stem"]["frozen"].item()
    assert (first[first["frozen"]]["weight_change"] == 0).all()
    assert (first[~first["frozen"]]["weight_change"] > 0).all()
    events = s.events(row["id"])
    assert "started epoch 1" in events["message"].iloc[0] and "finished" in events["message"].iloc[-1]
    plan = json.loads(s.run(row["id"])["plan"])
    assert {p["group"] for p in plan if p["frozen"]} == {"stem", "stage1", "stage2", "stage3"}


def test_steps_are_written_in_batches_not_one_commit_each(isolated_home):
    s = Store()
    run_id = s.add_run(RunConfig().to_json(), status="running")
    listener = StoreListener(s, run_id, flush_seconds=3600)
    for i in range(1, 51):
        listener(events.Step(1, i, 1.0 / i, 1e-3, 100.0))
    reader = Store(recover=False)
    assert len(reader.metrics([run_id], "step")) == 0  # buffered
    listener(events.EpochEnd(1, 0.5, 0.8, 0.6, 0.75, 1.0, 100.0))
    assert len(reader.metrics([run_id], "step")) == 50
    assert list(reader.metrics([run_id])["epoch"]) == [1]
    assert reader.run(run_id)["epochs_done"] == 1


@pytest.mark.slow
def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(isolated_home):
    isolated_home.mkdir(parents=True)
    db = isolated_home / "tlab.sqlite"
    db.write_bytes(b"these are my holiday notes, not a database\n" * 100)
    before = digest(db)
    with pytest.raises(StoreError, match="not a Transfer Learning Lab run store"):
        Store()
    res = run_cli("runs")
    assert res.returncode == 2 and "left untouched" in res.stderr and "Traceback" not in res.stderr
    assert digest(db) == before
    assert not (isolated_home / "tlab.sqlite-wal").exists()


def test_another_applications_database_is_refused_and_left_untouched(isolated_home):
    isolated_home.mkdir(parents=True)
    db = isolated_home / "tlab.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE recipes (name TEXT)")
        c.execute("INSERT INTO recipes VALUES ('soup')")
    before = digest(db)
    with pytest.raises(StoreError, match="another application"):
        Store()
    assert digest(db) == before
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT name FROM recipes").fetchall() == [("soup",)]


def test_a_store_from_a_newer_version_is_refused(isolated_home):
    s = Store()
    s.conn.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION + 1}")
    s.close()
    with pytest.raises(StoreError, match="newer version"):
        Store()


@pytest.mark.slow
def test_unknown_run_is_a_clear_error():
    res = run_cli("show", "nope")
    assert res.returncode == 2 and "No run 'nope'" in res.stderr


@pytest.fixture
def tmpfs(mount_tmpfs):
    """A real 512 KB filesystem we can fill up or make read-only (mounting needs root, as in CI)."""
    return mount_tmpfs("512k")


@pytest.mark.slow
def test_read_only_data_folder_is_a_clear_error(tmpfs, monkeypatch):
    home = tmpfs / "tlab"
    monkeypatch.setenv("TLAB_HOME", str(home))
    s = Store()
    run_id = s.add_run(RunConfig().to_json())
    s.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(StoreError, match="read-only|writable"):
        Store().add_run(RunConfig().to_json())
    res = run_cli("launch", "--epochs", "1")
    assert res.returncode == 2 and ("read-only" in res.stderr or "writable" in res.stderr)
    assert "Traceback" not in res.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert Store().run(run_id)["status"] == "queued"  # what was stored is still there


@pytest.mark.slow
def test_full_disk_is_a_clear_error(tmpfs, monkeypatch):
    home = tmpfs / "tlab"
    monkeypatch.setenv("TLAB_HOME", str(home))
    s = Store()
    run_id = s.add_run(RunConfig().to_json())
    with open(tmpfs / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    with pytest.raises(StoreError, match="full"):
        for i in range(2000):
            s.log(run_id, "x" * 1500)
    res = run_cli("launch", "--epochs", "1")
    assert res.returncode == 2 and "full" in res.stderr and "Traceback" not in res.stderr
    (tmpfs / "filler").unlink()
    assert Store().run(run_id)["status"] == "queued"  # what was stored is still there
