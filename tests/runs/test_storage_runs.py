"""The data folder's upkeep around real (tiny) training on a real file system:
the cache cap holds under a sweep and never evicts what a running job reads;
a checkpoint that can't fit the free disk ends the run with its reason; a
backup taken while a run writes restores to a store that opens, with the
run's epochs up to the backup."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
import torch

from core import faults, paths
from core.runs import backup, jobs
from core.runs.store import Store
from core.train import cache, data, engine
from core.train.config import RunConfig
from helpers import wait_for

pytestmark = pytest.mark.slow
MB = 2**20
TINY = dict(backbone="small_cnn", strategy="scratch", labels_per_class=5, batch_size=32, device="cpu", epochs=1)


@pytest.fixture(autouse=True)
def no_tensorboard(monkeypatch):
    monkeypatch.setenv("TLAB_TENSORBOARD", "0")  # its confusion-matrix image costs more than these runs


def tiny(**kw) -> RunConfig:
    return RunConfig(**{**TINY, **kw})


def data_entry(px: int) -> str:
    """The file name of the digits' decoded-data cache entry at `px`."""
    key = {"dataset": "digits", "size": px, "stamp": list(data.source_stamp("digits")), "decode": data.DECODE_VERSION}
    return cache.path_for("data", key).name


def cached_bytes() -> int:
    return sum(size for _, size, _ in cache.entries())


def test_the_cache_cap_holds_under_a_sweep_and_spares_what_a_running_job_reads(mount_tmpfs, monkeypatch, one_thread,
                                                                                 fresh_raw_cache):
    home = mount_tmpfs("64m")
    monkeypatch.setenv("TLAB_HOME", str(home))
    monkeypatch.setenv("TLAB_CACHE_MB", "1.4")  # digits decoded at 16, 18, 20 px: 0.47, 0.57, 0.70 MB
    cap = int(1.4 * MB)
    cache.save("features", {"old": 1}, {"x": torch.zeros(300_000, dtype=torch.uint8)})  # an older entry
    data.load_raw("digits", 16)  # decoded outside any job: the first run reads it from disk
    data._raw_cached.cache_clear()
    seen = {}

    def squeeze(loss, epoch=0, step=0, run_id=""):  # while the first run trains: another job needs 1.2 MB
        if not seen:
            seen["lease"] = (home / "cache" / "leases" / f"{run_id}-{os.getpid()}.json").read_text()
            seen["room"] = cache.make_room(int(1.2 * MB))
            seen["left"] = sorted(p.parent.name for _, _, p in cache.entries())
        return loss

    sizes = []
    with faults.inject("loss", squeeze):
        for px in (16, 18, 20):
            data._raw_cached.cache_clear()
            row = jobs.run_foreground(tiny(image_size=px))
            assert row["status"] == "finished", row["reason"]
            sizes.append(cached_bytes())
    sixteen = data_entry(16)
    assert sixteen in seen["lease"]  # the running job's lease names the entry it read
    assert seen["left"] == ["data"] and not seen["room"]  # the old feature entry went; the leased one stayed
    assert all(s <= cap for s in sizes), sizes
    assert sizes[1] > sizes[0]  # 16 and 18 px fit together; 20 px pushed the least recently used (16) out
    assert sorted(p.name for _, _, p in cache.entries()) == sorted([data_entry(18), data_entry(20)])
    assert not list((home / "cache" / "leases").glob("*.json"))  # every lease ended with its job


def test_a_checkpoint_that_cannot_fit_the_free_disk_ends_the_run_with_its_reason(mount_tmpfs, one_thread):
    disk = mount_tmpfs("24m")
    run_dir = disk / "run"

    def fill(loss, epoch=0, **_):
        if epoch == 2 and not (disk / "filler").exists():  # leave 5 MB: best.pt (2.2 MB) fits, checkpoint.pt (8.8) not
            (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 5 * MB))
        return loss

    with faults.inject("loss", fill):
        result = engine.Trainer(tiny(epochs=2, image_size=16), run_dir, "lowdisk").run()
    assert result.status == "failed"
    assert f"not enough free disk space to write the checkpoint {run_dir / 'checkpoint.pt'}" in result.reason
    assert "the previous checkpoint is intact" in result.reason and "resume" in result.reason
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(run_dir.glob("*.tmp"))


def test_a_backup_taken_while_a_run_writes_restores_with_its_epochs_up_to_the_backup(tmp_path, monkeypatch, one_thread):
    store = Store()
    rows = []
    trainer = threading.Thread(target=lambda: rows.append(jobs.run_foreground(tiny(epochs=4, image_size=16))))
    trainer.start()
    try:
        running = wait_for(lambda: store.query("SELECT id FROM runs WHERE status = 'running' AND epochs_done >= 1"),
                           timeout=300)
        wait_for(lambda: (paths.run_dir(running[0]["id"]) / "checkpoint.pt").exists(), timeout=300)
        done = backup.backup(store, tmp_path / "lab.zip")
    finally:
        trainer.join()
    run_id = rows[0]["id"]
    assert rows[0]["status"] == "finished" and rows[0]["epochs_done"] == 4 and done["runs"] == 1

    monkeypatch.setenv("TLAB_HOME", str(tmp_path / "restored"))
    restored = backup.restore(tmp_path / "lab.zip")
    assert restored["runs"] == 1 and restored["interrupted"] == 1
    again = Store()
    assert again.damage == []
    row = again.run(run_id)
    epochs = again.metrics([run_id])["epoch"].tolist()
    assert row["status"] == "interrupted" and "running when the backup was taken" in row["reason"]
    assert 1 <= row["epochs_done"] <= 4 and epochs == list(range(1, row["epochs_done"] + 1))
    ckpt = torch.load(paths.run_dir(run_id) / "checkpoint.pt", weights_only=True)
    assert 1 <= ckpt["epoch"] <= row["epochs_done"]  # the store is never behind the checkpoint it came with
    with pytest.raises(Exception, match="not empty"):
        backup.restore(tmp_path / "lab.zip")
