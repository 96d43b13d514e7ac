"""The Storage page: sizes by kind, a group deleted after a confirmation that
names its runs and the space they free, never a running run, orphans removed."""

from __future__ import annotations

import os

from streamlit.testing.v1 import AppTest

from helpers import ROOT
from core import children, paths
from core.runs.store import Store

MB = 2**20


def _run(store: Store, group: str, mb: float, status: str = "finished", name: str = "") -> str:
    run_id = store.add_run("{}", name=name, group_id=group, status=status)
    paths.run_dir(run_id).mkdir(parents=True)
    (paths.run_dir(run_id) / "checkpoint.pt").write_bytes(b"w" * int(mb * MB))
    with store.tx() as c:
        c.execute("UPDATE runs SET epochs_done = 1, worker_pid = ?, pid_start = ? WHERE id = ?",
                  (os.getpid(), children.pid_start(os.getpid()), run_id))
    return run_id


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("views/storage.py").run()
    assert not at.exception, at.exception
    return at


def test_storage_page_deletes_a_group_after_naming_it_and_its_size():
    store = Store()
    old = [_run(store, "g-old", 1.5, name=f"old {i}") for i in range(2)]
    kept = _run(store, "g-keep", 1)
    at = _page()
    text = " ".join(str(t.value) for t in at.table)
    assert "runs" in text and "4.0 MB" in text
    at.radio(key="storage_how").set_value("a group").run()
    at.selectbox(key="storage_group").set_value("g-old").run()
    at.button(key="storage_delete").click().run()
    warning = " ".join(w.value for w in at.warning)
    assert "Delete 2 run(s) and their folders, freeing 3.0 MB" in warning
    at.button(key="storage_yes").click().run()
    assert not at.exception, at.exception
    assert any("Deleted 2 run(s), freed 3.0 MB" in s.value for s in at.success)
    assert not any(paths.run_dir(r).exists() for r in old) and paths.run_dir(kept).exists()
    assert store.runs()["id"].tolist() == [kept]


def test_storage_page_never_deletes_a_running_run_and_removes_orphans():
    store = Store()
    busy = _run(store, "g-busy", 0.5, status="running")
    _run(store, "g-busy", 0.5)
    stray = paths.home() / "20260101-000000-abcdef"
    stray.mkdir()
    (stray / "checkpoint.pt").write_bytes(b"x" * 2048)
    at = _page()
    at.selectbox(key="storage_group").set_value("g-busy").run()
    at.button(key="storage_delete").click().run()
    assert any(f"{busy} is running" in e.value for e in at.error)
    assert paths.run_dir(busy).exists() and len(store.runs()) == 2
    at.button(key="storage_orphans").click().run()
    assert any("Removed the orphans, freed 2.0 KB" in s.value for s in at.success) and not stray.exists()
