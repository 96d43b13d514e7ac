"""`python -m core predict`: a run's top-5 for one image, as the Predict page
computes it; bad run ids, unknown runs and bad images are one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import bomb_png, run_cli
from core import paths
from core.cli import main as cli, runs as cli_runs
from core.insight import predict
from core.runs import jobs
from core.runs.store import Store
from core.train.checkpoint import load_run_model
from core.train.config import RunConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    home = tmp_path_factory.mktemp("cli_predict") / "tlab"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLAB_HOME", str(home))
        row = jobs.run_foreground(RunConfig(backbone="small_cnn", strategy="scratch", epochs=2, image_size=16, labels_per_class=10,
                                            device="cpu"))
    assert row["status"] == "finished"
    return home, row["id"]


@pytest.fixture
def at_home(trained, monkeypatch):
    monkeypatch.setenv("TLAB_HOME", str(trained[0]))
    return trained


@pytest.mark.slow
def test_predict_json_is_the_top5_the_predict_page_shows(at_home, digit_png):
    home, run_id = at_home
    res = run_cli("predict", "--run", run_id, "--image", str(digit_png), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["run_id"] == run_id and out["epoch"] == 2
    probs = [t["probability"] for t in out["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # The page's path: the uploaded bytes through core.insight.predict with the run's checkpoint.
    page = predict.predict(load_run_model(paths.run_dir(run_id)), digit_png.read_bytes(), k=5)
    assert [t["class"] for t in out["top"]] == [c for c, _ in page]
    assert np.allclose(probs, [p for _, p in page], atol=1e-5)


def test_predict_prints_a_table_for_people(at_home, digit_png, capsys):
    assert cli.main(["predict", "--run", at_home[1], "--image", str(digit_png), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"run {at_home[1]} (Small CNN") and "10 classes, epoch 2" in lines[0]
    assert len(lines) == 4 and lines[1].strip()[0].isdigit() and "%" in lines[1]


def stored(home, run_id) -> tuple:
    """What the data folder holds: its files, the checkpoint's bytes, the runs table."""
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if not p.name.endswith(("-wal", "-shm")))
    ckpt = (paths.run_dir(run_id) / "checkpoint.pt").read_bytes()
    return files, hash(ckpt), Store().runs().drop(columns=["created"]).to_json()


@pytest.mark.parametrize("case,needle", [
    ("bad-id", "is not a run id"),
    ("unknown-run", "No run 'nosuchrun'"),
    ("text-image", "could not read the image"),
    ("missing-image", "is not a file"),
    ("bomb-image", "pixels per image limit"),
    ("top-0", "--top must be a whole number of at least 1"),
])
def test_bad_predict_input_is_one_line_exit_2_and_changes_nothing(at_home, tmp_path, capsys, case, needle):
    home, run_id = at_home
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    args = {"bad-id": ["--run", "../../etc", "--image", str(text)],
            "unknown-run": ["--run", "nosuchrun", "--image", str(text)],
            "text-image": ["--run", run_id, "--image", str(text)],
            "missing-image": ["--run", run_id, "--image", str(tmp_path / "gone.png")],
            "bomb-image": ["--run", run_id, "--image", str(bomb)],
            "top-0": ["--run", run_id, "--image", str(text), "--top", "0"]}[case]
    before = stored(home, run_id)
    try:
        code = cli.main(["predict", *args])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert stored(home, run_id) == before


def test_an_unexpected_error_is_one_line_exit_1_and_no_traceback(monkeypatch, capsys):
    def broken(args):
        raise ValueError("something deep went wrong\nwith a second line")

    monkeypatch.setattr(cli_runs, "cmd_runs", broken)
    assert cli.main(["runs"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected ValueError: something deep went wrong with a second line" in err
    assert "-v" in err and "Traceback" not in err
