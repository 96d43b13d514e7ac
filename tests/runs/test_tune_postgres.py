"""A study shared through a real PostgreSQL server, as several machines share one:
the test starts its own server (Debian's postgresql, installed by `make test`) on a
private socket and port, and two tuners join one study through its URL."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from core.runs import tune
from core.runs.store import Store
from helpers import ROOT, wait_for

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert bins, "PostgreSQL's server is missing: `make test` installs Debian's postgresql package"
    bindir = os.path.dirname(bins[-1])
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as another user.
    base = Path(tempfile.mkdtemp(prefix="tlab-pg-"))
    data, sock = base / "pg", base / "sock"
    data.mkdir()
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's own user
        pw = pwd.getpwnam("postgres")
        for p in (base, data, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, f"{bindir}/initdb", "-D", str(data), "-U", "tlab", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    server = subprocess.Popen([*as_user, f"{bindir}/postgres", "-D", str(data), "-p", str(port), "-k", str(sock),
                               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(up, timeout=60)
        subprocess.run([f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "tlab", "optuna"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql://tlab@127.0.0.1:{port}/optuna"
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_two_tuners_share_a_study_on_a_postgresql_server(postgres):
    cmd = [sys.executable, "-m", "core", "tune", "--study", "pg", "--trials", "3", "--strategies", "scratch",
           "--storage", postgres, "--backbone", "small_cnn", "--dataset", "digits", "--image-size", "16",
           "--labels-per-class", "10", "--epochs", "2", "--device", "cpu", "--pruner", "none", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    study = tune.summary(tune.load("pg", postgres))
    assert (study["trials"], study["complete"], study["running"], study["fail"]) == (3, 3, 0, 0)
    run_ids = {r["run_id"] for r in study["runs"]}
    rows = Store().query("SELECT id, status FROM runs WHERE group_id = ?", (tune.group_id("pg"),))
    assert {r["id"] for r in rows} == run_ids and {r["status"] for r in rows} == {"finished"}
    assert not (ROOT / "tune").exists() and not list(Store().path.parent.glob("tune/*.journal"))  # nothing local
    assert json.loads(outs[0][0])["study"] == "pg"
