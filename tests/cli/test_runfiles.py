"""Run files: a run's settings as TOML, read back by every command that trains
(`--config`, flags over the file), written into each run's folder, and the
Experiment form's command line; all generic over RunConfig's fields."""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
import tomllib

import pytest

from core.cli import options
from core.cli.main import build_parser, main as cli_main
from core.runs import jobs
from core.runs.store import Store
from core.service import settings
from core.train import runfile
from core.train.config import RunConfig


def every_field_changed() -> RunConfig:
    """A config whose every field differs from its default, whatever fields RunConfig has."""
    picks = dict(backbone="small_cnn", strategy="partial", dataset="folder:/data/my images", device="cpu",
                 name='my "best" run', weights="C:\\weights\\w.pt", teacher="20261201-120000-abcdef",
                 val_fraction=0.2, test_fraction=0.1, lr_decay=0.25, temperature=2.5, alpha=0.5)
    values = {}
    for f in dataclasses.fields(RunConfig):
        kind, optional = runfile.field_types()[f.name]
        default = getattr(RunConfig(), f.name)
        if f.name in picks:
            values[f.name] = picks[f.name]
        elif kind is bool:
            values[f.name] = not default
        elif kind in (tuple, list):  # e.g. per-class weights
            el = runfile.element_type(f.name)
            values[f.name] = kind(el(v) for v in (2, 3)) if el is not str else kind(("a", "b"))
        elif kind in (int, float):
            values[f.name] = kind((default or 1) * 2 + 2)
        else:
            values[f.name] = f"{default}-x"
    return RunConfig(**{**values, "processes": 2, "batch_size": 34})


def parse(*argv: str):
    args = build_parser().parse_args(list(argv))
    args.argv = list(argv)
    return args


def write(tmp_path, text: str, name: str = "run.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_every_field_survives_file_and_cli(tmp_path):
    cfg = every_field_changed()
    text = runfile.dumps(cfg)
    for f in dataclasses.fields(RunConfig):
        assert f"{f.name} = " in text  # every field, with its value
    assert RunConfig.from_dict(runfile.loads(text).runs[0]) == cfg
    got = options.run_config(parse("train", "--config", write(tmp_path, text)), check=False)
    assert got == cfg
    # ...and as the command line the Experiment page offers to copy.
    line = settings.command(cfg)
    assert options.run_config(parse(*shlex.split(line)[3:]), check=False) == cfg


def test_unset_fields_are_comments_read_back_as_their_default(tmp_path):
    cfg = RunConfig(lr=None, labels_per_class=None, steps=None)
    text = runfile.dumps(cfg)
    assert "# lr is not set" in text and "# labels_per_class is not set" in text
    assert options.run_config(parse("train", "--config", write(tmp_path, text)), check=False) == cfg


def test_flags_override_the_file_even_with_the_default_value(tmp_path):
    path = write(tmp_path, runfile.dumps(RunConfig(epochs=7, labels_per_class=5, augment="strong", lr=0.01)))
    cfg = options.run_config(parse("train", "--config", path, "--epochs", "3", "--labels-per-class", "all",
                                   "--augment", "none", "--lr", "none"), check=False)
    assert (cfg.epochs, cfg.labels_per_class, cfg.augment, cfg.lr) == (3, None, "none", None)
    assert options.run_config(parse("train", "--config", path), check=False).epochs == 7


@pytest.mark.parametrize("text,needle", [
    ("epochs = 2\nlearning_rate = 0.1\n", "unknown setting(s) learning_rate. Known settings: backbone, strategy"),
    ("epochs = 2.5\n", "epochs must be a whole number"),
    ("augment = 1\n", "augment must be text in quotes"),
    ("flip = 1\n", "flip must be true or false"),
    ("epochs = \n", "not valid TOML"),
    ("[[runs]]\nepochs = 1\n[[runs]]\nbogus = 2\n", "run 2: unknown setting(s) bogus"),
])
def test_a_bad_file_is_one_clear_line(tmp_path, capsys, text, needle):
    code = cli_main(["train", "--config", write(tmp_path, text)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_a_missing_file_and_a_group_file_for_one_run_say_what_to_do(tmp_path, capsys):
    assert cli_main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    group = write(tmp_path, runfile.dumps_group([RunConfig(), RunConfig(seed=1)], "race"), "g.toml")
    assert cli_main(["train", "--config", group]) == 2
    assert "is a group file (2 runs)" in capsys.readouterr().err


@pytest.fixture
def no_workers(monkeypatch):
    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])


def test_a_group_file_queues_its_runs_as_one_group(tmp_path, no_workers, capsys):
    runs = [RunConfig(strategy=s, image_size=16, epochs=1, name=s) for s in ("scratch", "feature_extraction")]
    path = write(tmp_path, runfile.dumps_group(runs, "race"), "race.toml")
    assert cli_main(["launch", "--config", path, "--epochs", "2"]) == 0
    queued = Store().runs()
    assert len(queued) == 2 and queued["group_id"].nunique() == 1 and set(queued["kind"]) == {"race"}
    got = sorted((RunConfig.from_json(c) for c in queued["config"]), key=lambda c: c.name)
    assert got == sorted((r.replace(epochs=2) for r in runs), key=lambda c: c.name)
    # race and sweep-labels take the same file: its runs as listed.
    capsys.readouterr()


def test_race_and_sweep_take_a_run_file_as_their_base(tmp_path, no_workers, monkeypatch):
    from core.runs import experiments

    monkeypatch.setattr(experiments, "wait_all", lambda ids, store=None: [Store().run(i) for i in ids])
    path = write(tmp_path, runfile.dumps(RunConfig(image_size=32, epochs=2, seed=5)))
    cli_main(["race", "--config", path, "--strategies", "full,scratch", "--seed", "6"])
    race = [RunConfig.from_json(c) for c in Store().runs()["config"]]
    assert {(c.image_size, c.seed) for c in race} == {(32, 6)}
    cli_main(["sweep-labels", "--config", path, "--strategies", "scratch", "--labels", "1", "--seeds", "1", "--steps", "7"])
    sweep = [RunConfig.from_json(c) for c in Store().runs()["config"] if '"steps": 7' in c]
    assert len(sweep) == 1 and sweep[0].image_size == 32 and sweep[0].labels_per_class == 1  # the file's size, not 48

# That a real run writes config.toml into its folder: tests/runs/test_tensorboard.py.


def test_distill_reads_its_teacher_from_the_file(tmp_path, capsys):
    path = write(tmp_path, runfile.dumps(RunConfig(backbone="small_cnn")))
    assert cli_main(["distill", "--config", path]) == 2
    assert "distill needs a teacher" in capsys.readouterr().err
    path = write(tmp_path, runfile.dumps(RunConfig(backbone="small_cnn", teacher="20261201-000000-abcdef")))
    assert cli_main(["distill", "--config", path]) == 2
    assert "No run '20261201-000000-abcdef'" in capsys.readouterr().err  # the file's teacher was looked up
