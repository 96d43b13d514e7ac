"""Background jobs with real worker processes and a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import NONET, ROOT, run_cli, wait_for
from core.runs import jobs
from core.runs.store import Store
from core.train.config import RunConfig

TINY = dict(backbone="small_cnn", strategy="scratch", device="cpu")


def tiny(**kw) -> RunConfig:
    return RunConfig(**{**TINY, "image_size": 16, **kw})


@pytest.fixture
def worker_env(monkeypatch):
    """Workers spawned by jobs.launch inherit the no-network guard."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NONET), str(ROOT)]))


@pytest.fixture(autouse=True)
def stop_workers_after(isolated_home):
    yield
    if (isolated_home / "tlab.sqlite").exists():
        store = Store(isolated_home / "tlab.sqlite", recover=False)
        for pid in store.live_workers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_launched_run_outlives_the_launcher_and_wait_returns_its_metrics(isolated_home):
    # 30 labels per class: 9 steps an epoch, and still 0.90-0.93 test accuracy over seeds 0-2 after 2 epochs.
    launched = run_cli("launch", "--backbone", "small_cnn", "--strategy", "scratch", "--epochs", "2",
                       "--image-size", "16", "--labels-per-class", "30", "--json")
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    # The launching process has exited; the run is still in the queue or training.
    assert Store().run(run_id)["status"] in ("queued", "running")
    waited = run_cli("wait", run_id, "--json", "--timeout", "120")
    assert waited.returncode == 0, waited.stderr
    out = json.loads(waited.stdout)
    assert out["status"] == "finished" and out["run_id"] == run_id
    assert out["epochs"] == 2 and out["test_accuracy"] > 0.5
    assert [int(e) for e in Store().metrics([run_id])["epoch"]] == [1, 2]
    listed = json.loads(run_cli("runs", "--json").stdout)
    assert [r["status"] for r in listed if r["id"] == run_id] == ["finished"]


@pytest.mark.slow
def test_kill_minus_9_marks_interrupted_and_resume_finishes_without_gaps(isolated_home, worker_env, one_thread):
    # 40 labels per class: 25 steps an epoch, so the kill after epoch 1 still lands with 75 steps to go.
    cfg = tiny(epochs=4, batch_size=16, image_size=24, labels_per_class=40)
    run_id = jobs.launch(cfg)
    store = Store()
    wait_for(lambda: store.run(run_id)["epochs_done"] >= 1, timeout=180)
    pid = store.run(run_id)["worker_pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z")

    listed = run_cli("runs", "--json")  # "the next time anything opens the store"
    row = next(r for r in json.loads(listed.stdout) if r["id"] == run_id)
    assert row["status"] == "interrupted"
    done = row["epochs_done"]
    kept = Store().metrics([run_id])
    assert [int(e) for e in kept["epoch"]] == list(range(1, done + 1))

    resumed = run_cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    final = jobs.wait(run_id, timeout=180)
    assert final["status"] == "finished"
    epochs = Store().metrics([run_id])
    assert [int(e) for e in epochs["epoch"]] == [1, 2, 3, 4]
    steps = Store().metrics([run_id], "step")["step"].tolist()
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 4 * final["steps_per_epoch"]
    assert "marked interrupted" in " ".join(Store().events(run_id)["message"])

    # Resuming lost nothing: the same config trained without a kill gives the same curve.
    twin = jobs.run_foreground(cfg.replace(name="twin"))
    twin_epochs = Store().metrics([twin["id"]])
    assert twin_epochs["val_accuracy"].tolist() == pytest.approx(epochs["val_accuracy"].tolist(), abs=0.02)


@pytest.mark.slow
def test_ten_runs_launched_at_once_queue_and_all_finish_one_at_a_time(isolated_home, worker_env):
    ids = [jobs.launch(tiny(epochs=1, seed=i, backbone="mlp", labels_per_class=10)) for i in range(10)]
    store = Store()
    assert len(store.live_workers()) == 1  # ten launches, one worker
    for run_id in ids:
        assert jobs.wait(run_id, timeout=240)["status"] == "finished"
    spans = sorted((store.run(i)["started"], store.run(i)["ended"]) for i in ids)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "runs overlapped"
    wait_for(lambda: not store.live_workers(), timeout=30)  # the worker exits when idle
    # The suite sets OMP_NUM_THREADS=1 (tests/conftest.py): the worker honours it, whatever the core count.
    assert "on 1 torch thread(s)" in (isolated_home / "worker.log").read_text()


@pytest.mark.parametrize("omp, cores, expected", [(None, 8, 8), ("3", 8, 3), ("16", 8, 8), ("0", 8, 8), ("x", 8, 8)])
def test_a_run_uses_every_core_unless_omp_num_threads_caps_it(monkeypatch, omp, cores, expected):
    import torch

    monkeypatch.setattr(jobs, "_cores", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    before = torch.get_num_threads()
    try:
        assert jobs._set_threads(None, {"side_by_side": 0}) == expected
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_side_by_side_group_trains_together(isolated_home, worker_env):
    cfgs = [tiny(epochs=3, batch_size=16, image_size=24),
            tiny(epochs=3, batch_size=16, image_size=24, seed=1)]
    group, ids = jobs.launch_group(cfgs, side_by_side=True)
    store = Store()
    assert len(store.live_workers()) == 2
    rows = [jobs.wait(i, timeout=240) for i in ids]
    assert all(r["status"] == "finished" and r["group_id"] == group for r in rows)
    (s1, e1), (s2, e2) = [(r["started"], r["ended"]) for r in rows]
    assert s1 < e2 and s2 < e1, "the two runs of the group should overlap in time"


@pytest.mark.slow
def test_cancel_keeps_the_checkpoint_and_resume_completes(isolated_home, worker_env):
    run_id = jobs.launch(tiny(epochs=30, batch_size=16, image_size=24))
    store = Store()
    wait_for(lambda: store.run(run_id)["epochs_done"] >= 1, timeout=180)
    assert run_cli("cancel", run_id).returncode == 0
    row = jobs.wait(run_id, timeout=60)
    assert row["status"] == "cancelled"
    ckpt = isolated_home / run_id / "checkpoint.pt"
    assert ckpt.exists()
    import torch

    assert torch.load(ckpt, weights_only=True)["epoch"] == row["epochs_done"] >= 1
    assert run_cli("cancel", run_id).returncode == 2  # already ended: a clear no


def test_queued_run_cancels_at_once(isolated_home):
    run_id = jobs.launch(tiny(epochs=1), start_worker=False)
    assert jobs.cancel(run_id) == "queued"
    assert Store().run(run_id)["status"] == "cancelled"


@pytest.mark.slow
def test_an_exception_in_training_marks_the_run_failed_with_its_traceback(isolated_home, worker_env, tmp_path):
    folder = tmp_path / "imgs"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
    run_id = jobs.launch(tiny(epochs=1, dataset=f"folder:{folder}"))
    row = jobs.wait(run_id, timeout=120)
    assert row["status"] == "failed"
    assert "no readable image" in row["reason"] and "\n" not in row["reason"]
    events = Store().events(run_id)
    assert "Traceback" in events["detail"].iloc[-1]


@pytest.mark.slow
def test_readers_in_other_processes_see_consistent_data_while_a_run_writes(isolated_home, worker_env, tmp_path):
    run_id = jobs.launch(tiny(epochs=4, batch_size=16, image_size=24, labels_per_class=30))
    # Each reader reads until the run has ended, however long a loaded machine takes to train it.
    reader = f"""
import json, sys, time
from core.runs.store import Store, TERMINAL
s = Store(recover=False)
reads = bad = 0
while True:
    run = s.run({run_id!r})
    ep = s.metrics([{run_id!r}])
    st = s.metrics([{run_id!r}], "step")
    reads += 1
    epochs = [int(e) for e in ep["epoch"]] if len(ep) else []
    steps = st["step"].tolist() if len(st) else []
    if epochs != list(range(1, len(epochs) + 1)): bad += 1
    if steps != list(range(1, len(steps) + 1)): bad += 1
    if run["steps_per_epoch"] and len(steps) < len(epochs) * run["steps_per_epoch"]: bad += 1
    if run["status"] in TERMINAL: break
    time.sleep(0.02)
print(json.dumps({{"reads": reads, "bad": bad, "status": run["status"]}}))
"""
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", reader], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [json.loads(p.communicate(timeout=500)[0]) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for out in outs:
        assert out["status"] == "finished"
        assert out["bad"] == 0 and out["reads"] > 5


def _children_of(pid: int) -> dict[int, str]:
    """This machine's processes whose parent is `pid`, with their state letter (Z: defunct)."""
    found = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found[int(d)] = fields[0]
    return found


@pytest.mark.slow
def test_a_long_lived_launcher_keeps_no_defunct_worker(isolated_home, worker_env):
    # A Streamlit server is a launcher that lives for weeks: each worker it starts must be reaped when it
    # ends, not kept as a <defunct> entry until the server exits.
    # One launch is the claim: the worker, once it exits, is gone from the launcher's children at once, with
    # no later launch or exit of the launcher to reap it.
    run_id = jobs.launch(tiny(epochs=1, labels_per_class=5))
    assert jobs.wait(run_id, timeout=120)["status"] == "finished"
    worker = Store().run(run_id)["worker_pid"]
    wait_for(lambda: worker not in _children_of(os.getpid()), timeout=30)
    assert "Z" not in _children_of(os.getpid()).values()
