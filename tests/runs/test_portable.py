"""Packs: a finished run moves to another data folder with its id, store rows,
checkpoint, settings and TensorBoard events; clashes, foreign and malicious
ZIPs are refused with a message and leave nothing behind; an older pack's
missing columns get their defaults."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from core.cli.main import main as cli_main
from core.runs import jobs, portable
from core.runs.store import Store
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def packed(isolated_home, tmp_path, monkeypatch, capsys):
    row = jobs.run_foreground(RunConfig(backbone="mlp", strategy="scratch", image_size=16, epochs=1, device="cpu",
                                        labels_per_class=3, name="from the cluster"))
    assert row["status"] == "finished"
    out = tmp_path / "runs.zip"
    assert cli_main(["pack", row["id"], "--out", str(out)]) == 0
    before = {t: Store().query(f"SELECT * FROM {t} WHERE {'id' if t == 'runs' else 'run_id'} = ?", (row["id"],))
              for t in ("runs", "step_metrics", "epoch_metrics", "layer_stats")}
    other = tmp_path / "laptop"
    monkeypatch.setenv("TLAB_HOME", str(other))
    capsys.readouterr()
    return row["id"], out, {t: [dict(r) for r in rows] for t, rows in before.items()}, other


@pytest.mark.slow  # a real run, packed and unpacked: ~6 s
def test_a_run_moves_to_another_data_folder_whole(packed, capsys):
    run_id, out, before, other = packed
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert f"runs/{run_id}/checkpoint.pt" in names and f"runs/{run_id}/config.toml" in names
    assert any(n.startswith(f"tensorboard/{run_id}/") for n in names)
    assert cli_main(["unpack", str(out)]) == 0
    assert run_id in capsys.readouterr().out
    s = Store()
    for table, rows in before.items():
        got = [dict(r) for r in s.query(f"SELECT * FROM {table} WHERE {'id' if table == 'runs' else 'run_id'} = ?", (run_id,))]
        if table == "runs":
            for r in (got[0], rows[0]):
                r.pop("worker_pid"), r.pop("pid_start"), r.pop("heartbeat")
        assert got == rows, table
    assert (other / run_id / "checkpoint.pt").is_file() and (other / run_id / "config.toml").is_file()
    assert s.events(run_id)["message"].str.contains("finished").any()

    # The same pack again: a clash, refused, and nothing changes.
    assert cli_main(["unpack", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"already has run(s) {run_id}" in err and "nothing was unpacked" in err


def _zip(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


MANIFEST = json.dumps({"format": portable.FORMAT, "schema": 1, "runs": ["r1"]})


@pytest.mark.parametrize("entries,needle", [
    ({"hello.txt": "hi"}, "not a pack of runs"),
    ({"manifest.json": MANIFEST, "runs/r1/../../../evil.py": "x"}, "would land outside its run's folder"),
    ({"manifest.json": MANIFEST, "/etc/passwd": "x"}, "would land outside"),
    ({"manifest.json": MANIFEST, "runs/r2/checkpoint.pt": "x"}, "would land outside"),
    ({"manifest.json": json.dumps({"format": portable.FORMAT, "schema": 999, "runs": ["r1"]})}, "newer version of the app"),
    ({"manifest.json": json.dumps({"format": portable.FORMAT, "schema": 1, "runs": ["../x"]})}, "is not a run id"),
])
def test_a_bad_pack_is_refused_and_leaves_nothing(isolated_home, entries, needle):
    with pytest.raises(Exception, match=needle):
        portable.unpack_bytes("p.zip", _zip(entries))
    assert not (isolated_home / "r1").exists() and not (isolated_home.parent / "evil.py").exists()
    assert Store().runs().empty
    with pytest.raises(portable.PackError, match="not a ZIP file"):
        portable.unpack_bytes("p.zip", b"not a zip")


def test_an_older_pack_gets_the_newer_columns_defaults(isolated_home):
    # A schema-1 pack: no `kind` or `world_size` column, no rank_metrics table.
    run = {"columns": ["id", "group_id", "name", "config", "status", "created", "test_accuracy"],
           "rows": [["r1", "g-1", "old", RunConfig().to_json(), "finished", 1.0, 0.5]]}
    store = {"runs": run, "epoch_metrics": {"columns": ["run_id", "epoch", "val_accuracy"], "rows": [["r1", 1, 0.4]]}}
    ids = portable.unpack_bytes("old.zip", _zip({"manifest.json": MANIFEST, "store/r1.json": json.dumps(store),
                                                 "runs/r1/config.toml": "epochs = 3\n"}))
    assert ids == ["r1"]
    r = Store().run("r1")
    assert (r["kind"], r["world_size"], r["test_accuracy"]) == ("", 1, 0.5)
    assert (isolated_home / "r1" / "config.toml").read_text() == "epochs = 3\n"


def test_a_running_run_is_not_packed(isolated_home, tmp_path):
    run_id = Store().add_run(RunConfig().to_json(), status="queued")
    with pytest.raises(portable.PackError, match="is queued: pack it once it has ended"):
        portable.pack([run_id], tmp_path / "x.zip")
