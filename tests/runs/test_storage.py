"""The data folder's upkeep on real file systems: sizes by kind, deleting a
group frees what it said, orphans, a damaged store or checkpoint reported
with what still works, slimmed runs that say they can't resume, the cache's
low-disk check."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from core import children, paths
from core.cli.main import main
from core.runs import integrity, jobs, storage
from core.runs.store import Store, StoreError
from core.train import cache, checkpoint

MB = 2**20


def _run_with_files(store: Store, group: str, status: str = "finished", mb: int = 1, run_id: str | None = None) -> str:
    run_id = store.add_run("{}", group_id=group, status=status, run_id=run_id)
    folder = paths.run_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(os.urandom(mb * MB))
    (folder / "config.toml").write_text("epochs = 1\n")
    with store.tx() as c:
        c.execute("UPDATE runs SET epochs_done = 1, worker_pid = ?, pid_start = ? WHERE id = ?",
                  (os.getpid(), children.pid_start(os.getpid()), run_id))  # a running one is this process's
    return run_id


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_du_shows_each_kind_and_the_largest_runs_by_stat_alone(capsys):
    store = Store()
    big = _run_with_files(store, "g-a", mb=2)
    small = _run_with_files(store, "g-a", mb=1)
    cache.save("data", {"k": 1}, {"x": torch.zeros(MB // 4, dtype=torch.int32)})  # 1 MB of tensor
    paths.save_upload("weights", "w.pth", b"u" * 3000)
    (paths.home() / "tensorboard" / big).mkdir(parents=True)
    (paths.home() / "tensorboard" / big / "events").write_bytes(b"e" * 5000)
    rc, out, _ = cli(capsys, "du", "--json")
    du = json.loads(out)
    kinds = {k["kind"]: k for k in du["kinds"]}
    assert rc == 0 and kinds["runs"]["files"] == 4
    assert kinds["runs"]["bytes"] == 3 * MB + 2 * len("epochs = 1\n")
    assert MB < kinds["data caches"]["bytes"] < MB + 64_000 and kinds["uploads"]["bytes"] == 3000
    assert kinds["tensorboard"]["bytes"] == 5000 and kinds["store"]["bytes"] > 0
    assert [r["run_id"] for r in du["largest_runs"]] == [big, small] and du["largest_runs"][0]["status"] == "finished"
    assert du["largest_caches"][0]["kind"] == "data"
    assert du["total_bytes"] == sum(k["bytes"] for k in du["kinds"])
    rc, out, _ = cli(capsys, "du")
    assert "runs" in out and "2.0 MB" in out and big in out


def test_deleting_a_group_frees_the_space_it_reported_and_never_a_running_run(mount_tmpfs, monkeypatch, capsys):
    home = mount_tmpfs("32m")
    monkeypatch.setenv("TLAB_HOME", str(home))
    store = Store()
    doomed = [_run_with_files(store, "g-old", mb=2) for _ in range(3)]
    kept = _run_with_files(store, "g-keep", mb=2)
    (home / "tensorboard" / doomed[0]).mkdir(parents=True)
    (home / "tensorboard" / doomed[0] / "events").write_bytes(b"e" * 4096)

    running = _run_with_files(store, "g-busy", status="running")
    with pytest.raises(StoreError, match=f"Not deleting anything: {running} \\(running\\)"):
        storage.delete(store, storage.plan_delete(store, [kept], group="g-busy"))
    assert paths.run_dir(kept).exists() and paths.run_dir(running).exists()

    rc, out, _ = cli(capsys, "delete", "--group", "g-old", "--dry-run", "--json")
    reported = json.loads(out)
    assert rc == 0 and sorted(r["run_id"] for r in reported["runs"]) == sorted(doomed) and not reported["deleted"]
    assert reported["bytes"] >= 6 * MB + 4096
    free_before = shutil.disk_usage(home).free
    rc, out, _ = cli(capsys, "delete", "--group", "g-old", "--json")
    done = json.loads(out)
    freed_on_disk = shutil.disk_usage(home).free - free_before
    assert rc == 0 and done["freed_bytes"] == reported["bytes"]
    assert abs(freed_on_disk - reported["bytes"]) <= 16 * 4096  # tmpfs counts whole pages
    assert not any(paths.run_dir(r).exists() for r in doomed) and not (home / "tensorboard" / doomed[0]).exists()
    assert sorted(store.runs()["id"]) == sorted([kept, running])
    rc, _, err = cli(capsys, "delete", running)
    assert rc == 2 and "still runs" in err and paths.run_dir(running).exists()


def test_orphans_are_found_and_removed_when_asked(capsys):
    store = Store()
    lost = _run_with_files(store, "g")
    shutil.rmtree(paths.run_dir(lost))
    stray = paths.home() / "20260101-000000-abcdef"
    stray.mkdir()
    (stray / "checkpoint.pt").write_bytes(b"x" * 1000)
    (paths.home() / "datasets" / "cifar").mkdir(parents=True)  # not a run's folder
    rc, out, _ = cli(capsys, "check", "--orphans")
    assert rc == 1 and "orphan folder (no run in the store): 20260101-000000-abcdef" in out
    assert f"orphan row (its run folder is gone): {lost}" in out and "cifar" not in out
    rc, out, _ = cli(capsys, "check", "--orphans", "--remove-orphans")
    assert rc == 0 and not stray.exists() and lost not in store.runs()["id"].tolist()
    assert (paths.home() / "datasets" / "cifar").exists()
    assert cli(capsys, "check", "--orphans")[1].strip() == "no orphans"


def test_a_store_damaged_by_a_truncated_write_is_reported_with_what_still_works(capsys):
    store = Store()
    for _ in range(3):
        _run_with_files(store, "g")
    for i in range(300):
        store.log(None, "m" * 400)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db = paths.home() / "tlab.sqlite"
    os.truncate(db, db.stat().st_size - 3 * 4096)  # the last pages of a write never reached the disk
    integrity._checked.clear()  # another process opens it: the file is shorter than at its last clean check
    with pytest.raises(integrity.StoreDamaged) as e:
        Store()
    assert "is damaged (database disk image is malformed)" in str(e.value)
    assert "Still there: 3 run folder(s) are untouched, 3 with a checkpoint" in str(e.value)
    assert "python -m core restore FILE" in str(e.value)
    rc, _, err = cli(capsys, "runs")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err and "damaged" in err


def test_a_store_with_a_damaged_page_opens_shows_what_reads_and_check_names_the_damage(capsys):
    store = Store()
    for _ in range(200):
        store.add_run("{}", name="x" * 100, status="finished")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = store.query("SELECT rootpage FROM sqlite_master WHERE name = 'runs_status'")[0][0]
    page = store.query("PRAGMA page_size")[0][0]
    store.close()
    db = paths.home() / "tlab.sqlite"
    with open(db, "r+b") as f:  # half of the status index's page overwritten
        f.seek((root - 1) * page + page // 2)
        f.write(b"\xff" * (page // 4))
    integrity.forget(db)
    again = Store()  # opens: the damage is found, not raised
    assert again.damage and "invalid page number" in again.damage[0]
    assert len(again.runs()) == 200
    assert "The run store is damaged (SQLite quick_check: On tree page" in integrity.damage_summary(again.damage)
    rc, out, _ = cli(capsys, "check")
    assert rc == 1 and "store: damaged" in out and "Still works: 200 run(s) still read" in out


def test_a_damaged_checkpoint_is_reported_with_what_was_lost_and_resume_refuses(capsys):
    store = Store()
    run_id = store.add_run("{}", status="interrupted")
    ckpt = paths.run_dir(run_id) / "checkpoint.pt"
    ckpt.parent.mkdir()
    torch.save({"model": {"w": torch.arange(50_000, dtype=torch.float32)}, "optimizer": {}}, ckpt)
    assert checkpoint.damage(ckpt) is None
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped bit-pattern inside the weights: torch.load alone would not notice
    ckpt.write_bytes(raw)
    with pytest.raises(checkpoint.CheckpointError, match="damaged \\(CRC mismatch in .*\\), the weights it held are lost"):
        checkpoint.load_run_model(ckpt)
    with pytest.raises(checkpoint.CheckpointError, match="damaged"):
        jobs.resume(run_id, store)
    rc, out, _ = cli(capsys, "check")
    assert rc == 1 and f"damaged checkpoint: {ckpt} (CRC mismatch" in out
    assert f"Lost: the trained weights of run {run_id}" in out and "Still works: its metrics" in out
    assert store.run(run_id)["status"] == "interrupted" and ckpt.exists()  # reported, never dropped


def test_slimmed_runs_keep_their_weights_and_say_they_cannot_resume(capsys):
    store = Store()
    run_id = store.add_run("{}", status="interrupted")
    ckpt = paths.run_dir(run_id) / "checkpoint.pt"
    ckpt.parent.mkdir()
    weights = {"w": torch.randn(100, 100)}
    torch.save({"model": weights, "optimizer": {"state": {0: {"exp_avg": torch.randn(100, 100)}}}}, ckpt)
    before = ckpt.stat().st_size
    rc, out, _ = cli(capsys, "slim", "--ended", "--json")
    assert rc == 0 and json.loads(out)["slimmed"][0]["run_id"] == run_id
    after = torch.load(ckpt, weights_only=True)
    assert "optimizer" not in after and torch.equal(after["model"]["w"], weights["w"])
    assert ckpt.stat().st_size < before * 0.6
    with pytest.raises(StoreError, match="can no longer resume: its checkpoint was slimmed"):
        jobs.resume(run_id, store)
    assert storage.usage(store).runs[0]["slimmed"]
    rc, out, _ = cli(capsys, "show", run_id)
    assert rc == 0 and "can no longer resume" in out


def test_a_cache_entry_that_does_not_fit_the_free_disk_is_skipped_and_the_caller_goes_on(mount_tmpfs, monkeypatch, caplog):
    home = mount_tmpfs("8m")
    monkeypatch.setenv("TLAB_HOME", str(home))
    monkeypatch.setenv("TLAB_CACHE_MB", "100")  # the cap allows it: the disk doesn't
    (home / "filler").write_bytes(b"\0" * (6 * MB))
    assert cache.save("features", {"k": 1}, {"x": torch.zeros(3 * MB, dtype=torch.uint8)}) is None
    assert "not enough free disk space for the cache entry" in caplog.text
    assert not list((home / "cache").rglob("*.pt")) and not list((home / "cache").rglob("*.tmp"))
    assert cache.save("features", {"k": 2}, {"x": torch.zeros(MB // 2, dtype=torch.uint8)}) is not None
