"""Faults injected into real (tiny) training: a NaN or inf loss, CUDA running
out of memory, a disk that fills up or turns read-only while checkpointing.
Each ends the run with a reason a person can act on, and what was stored
before it stays as it was."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import torch

from core import faults, paths
from core.runs import jobs
from core.runs.store import Store
from core.train import engine
from core.train.config import RunConfig

TINY = dict(backbone="small_cnn", strategy="scratch", image_size=16, labels_per_class=10, batch_size=32, device="cpu")


def tiny(**kw) -> RunConfig:
    return RunConfig(**{**TINY, **kw})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def at_epoch(epoch: int, action):
    """A 'loss' hook that runs `action(loss)` at the first step of `epoch`, once."""
    fired = []

    def hook(loss, epoch: int = 0, step: int = 0, run_id: str = ""):
        if epoch == at and not fired:
            fired.append((run_id, step))
            return action(loss)
        return loss

    at = epoch
    return hook, fired


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nan_or_inf_loss_fails_the_run_with_its_reason_and_keeps_the_last_good_checkpoint(bad, one_thread):
    kept = {}

    def poison(loss):
        kept["ckpt"] = digest(paths.run_dir(fired[0][0]) / "checkpoint.pt")  # epoch 1's, as it stands
        return loss * bad

    hook, fired = at_epoch(2, poison)
    with faults.inject("loss", hook):
        row = jobs.run_foreground(tiny(epochs=3))
    assert row["status"] == "failed" and f"loss became {bad}" in row["reason"] and "lower the learning rate" in row["reason"]
    ckpt = paths.run_dir(row["id"]) / "checkpoint.pt"
    assert digest(ckpt) == kept["ckpt"]
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    assert not list(ckpt.parent.glob("*.tmp"))
    assert row["epochs_done"] == 1 and Store().metrics([row["id"]])["epoch"].tolist() == [1]


def test_cuda_out_of_memory_fails_that_run_with_advice_and_the_worker_trains_the_next(one_thread, monkeypatch):
    # The worker loop in this process: on one thread (tiny inputs), and gone as soon as its queue is empty.
    monkeypatch.setattr(jobs, "_cores", lambda: 1)
    monkeypatch.setattr(jobs, "IDLE_EXIT_SECONDS", -1.0)

    def oom(loss):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)")

    store = Store()
    first = jobs.launch(tiny(epochs=1, batch_size=16), store, start_worker=False)
    second = jobs.launch(tiny(epochs=1), store, start_worker=False)
    hook, fired = at_epoch(1, oom)
    threads = torch.get_num_threads()
    try:
        with faults.inject("loss", hook):
            assert jobs.worker_main() == 0  # the worker drained the queue and exited normally
    finally:
        torch.set_num_threads(threads)
    assert fired[0][0] == first
    r1, r2 = store.run(first), store.run(second)
    assert r1["status"] == "failed"
    assert "out of memory" in r1["reason"] and "batch size 16" in r1["reason"] and "smaller batch size (e.g. 8)" in r1["reason"]
    assert "image size" in r1["reason"]
    assert r2["status"] == "finished" and r2["test_accuracy"] is not None


@pytest.fixture
def small_fs(mount_tmpfs):
    """A real 48 MB filesystem to fill up or make read-only (mounting needs root, as in CI)."""
    return mount_tmpfs("48m")


def _fill(mnt: Path) -> None:
    with open(mnt / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


@pytest.mark.slow  # 10-20 s on idle cores: out of `make test-fast`, still in `make test`
@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_checkpoint_write_failure_keeps_the_previous_checkpoint_and_resume_finishes(small_fs, fault, one_thread):
    run_dir = small_fs / "run"
    kept = {}

    def break_disk(loss):
        kept["ckpt"] = digest(run_dir / "checkpoint.pt")
        if fault == "disk-full":
            _fill(small_fs)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
        return loss

    hook, _ = at_epoch(2, break_disk)
    cfg = tiny(epochs=3)
    with faults.inject("loss", hook):
        result = engine.Trainer(cfg, run_dir, "faultrun").run()
    assert result.status == "failed"
    # The best epoch's weights are written first (when the epoch improved), then the last checkpoint.
    names = [run_dir / "best.pt", run_dir / "checkpoint.pt"]
    if fault == "disk-full":  # seen before writing: the free space is checked against the checkpoint's size
        assert any(f"not enough free disk space to write the checkpoint {n}" in result.reason for n in names), result.reason
    else:
        assert any(f"could not write the checkpoint {n} (Read-only file system)" in result.reason for n in names), result.reason
    assert "the previous checkpoint is intact" in result.reason and "resume" in result.reason
    assert digest(run_dir / "checkpoint.pt") == kept["ckpt"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "checkpoint.pt"]  # no half-written temporary file left

    if fault == "disk-full":
        (small_fs / "filler").unlink()
    else:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    resumed = engine.Trainer(cfg, run_dir, "faultrun").run(resume_from=run_dir / "checkpoint.pt")
    assert resumed.status == "finished" and resumed.epochs == 3
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 3
