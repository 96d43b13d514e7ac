"""Hyperparameter search on Optuna: the search space, the store's `pruned`
status, and real studies whose trials are real (tiny) runs trained by real
worker processes, with Optuna's own journal storage and pruners."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import optuna
import pytest

from core.errors import ConfigError
from core.runs import schema, tune, tune_space
from core.runs.store import Store
from core.train.config import RunConfig
from helpers import ROOT, recorded_study, wait_for

TINY = dict(backbone="small_cnn", dataset="digits", image_size=16, labels_per_class=10, device="cpu", epochs=3)


# --- the search space ------------------------------------------------------------------


def test_each_strategy_searches_its_own_knobs_and_lr_around_its_default():
    names = {s: {p.name for p in tune_space.default_space(s)} for s in ("full", "partial", "discriminative", "gradual")}
    assert names["partial"] - names["full"] == {"freeze_stages"}
    assert names["discriminative"] - names["full"] == {"lr_decay"}
    assert names["gradual"] - names["full"] == {"unfreeze_every"}
    from core.train import strategies

    for s in names:
        lr = next(p for p in tune_space.default_space(s) if p.name == "lr")
        assert lr.log and lr.low < strategies.get(s).default_lr < lr.high


def test_a_space_file_is_read_and_its_mistakes_are_named(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text('[lr]\nlow = 1e-4\nhigh = 1e-2\nlog = true\n[freeze_stages]\nlow = 0\nhigh = 2\n[augment]\nchoices = [true]\n')
    space = tune_space.read_space(f)
    assert [p.name for p in tune_space.for_strategy(space, "full")] == ["lr", "augment"]  # full reads no frozen stages
    assert [p.name for p in tune_space.for_strategy(space, "partial")] == ["lr", "freeze_stages", "augment"]
    f.write_text("[colour]\nlow = 1\nhigh = 2\n")
    with pytest.raises(ConfigError, match="'colour' can't be searched. Searchable settings: .*freeze_stages"):
        tune_space.read_space(f)
    f.write_text("[lr]\nlow = 0\nhigh = 1\nlog = true\n")
    with pytest.raises(ConfigError, match="low > 0 for a log scale"):
        tune_space.read_space(f)
    with pytest.raises(ConfigError, match="does not exist"):
        tune_space.read_space(tmp_path / "nope.toml")


# --- the store ---------------------------------------------------------------------------


def test_a_store_from_before_search_opens_keeps_its_runs_and_takes_pruned(tmp_path):
    path = tmp_path / "old.sqlite"
    c = sqlite3.connect(path, isolation_level=None)
    for m in schema.MIGRATIONS[:3]:  # the file as the last version before `pruned` wrote it
        c.executescript(m)
    c.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    c.execute("PRAGMA user_version = 3")
    c.execute("INSERT INTO runs (id, group_id, config, status, created) VALUES ('r1', 'r1', '{}', 'finished', 0)")
    c.execute("INSERT INTO epoch_metrics (run_id, epoch, val_accuracy) VALUES ('r1', 1, 0.5)")
    c.close()
    s = Store(path)
    assert s.run("r1")["status"] == "finished" and s.query("SELECT count(*) FROM epoch_metrics")[0][0] == 1
    s.set_status("r1", "pruned", "pruned by the hyperparameter search after epoch 1")
    assert s.run("r1")["status"] == "pruned"
    with pytest.raises(sqlite3.IntegrityError):
        s.conn.execute("UPDATE runs SET status = 'bogus' WHERE id = 'r1'")
    assert s.query("PRAGMA integrity_check")[0][0] == "ok"


# --- studies -----------------------------------------------------------------------------


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _tune_cmd(study: str, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "core", "tune", "--study", study, "--trials", str(trials), "--strategies", "scratch",
            "--backbone", "small_cnn", "--dataset", "digits", "--image-size", "16", "--labels-per-class", "10",
            "--epochs", "2", "--device", "cpu", "--json", *extra]


@pytest.mark.slow
def test_a_pruned_trial_stops_early_ends_pruned_and_keeps_its_epochs(monkeypatch):
    # Optuna's own ThresholdPruner with an unreachable bar: every trial is pruned at its first report.
    monkeypatch.setattr(tune, "_pruner", lambda name, epochs: optuna.pruners.ThresholdPruner(lower=1.5))
    # A budget the run can't finish before the pruner's stop reaches it (the tuner reads the store every 0.5 s,
    # the run its stop flag as often): at 3 epochs a tiny run ended first and the trial was simply complete.
    out = tune.Tuner(RunConfig(**{**TINY, "epochs": 60}), ["scratch"], 1, "pruned-one").run()
    assert (out["pruned"], out["complete"], out["best"]) == (1, 0, None)
    s = Store()
    row = s.run(out["runs"][0]["run_id"])
    assert row["status"] == "pruned" and "pruned by the hyperparameter search after epoch" in row["reason"]
    assert 1 <= row["epochs_done"] < 60  # stopped long before its budget ...
    kept = s.query("SELECT epoch, val_accuracy FROM epoch_metrics WHERE run_id = ?", (row["id"],))
    assert len(kept) >= 1 and kept[0]["val_accuracy"] is not None  # ... with what it had trained
    assert row["group_id"] == tune.group_id("pruned-one") and row["kind"] == tune.KIND
    events = [e["message"] for e in s.query("SELECT message FROM events WHERE run_id = ?", (row["id"],))]
    assert any(m.startswith("trial 0 of study pruned-one: strategy=scratch, lr=") for m in events)
    assert tune.summary(tune.load("pruned-one"))["pruned"] == 1  # the journal file in the data folder says so too


@pytest.mark.slow
def test_two_tuners_share_one_study_without_extra_duplicate_or_lost_trials(isolated_home):
    procs = [subprocess.Popen(_tune_cmd("shared", 3, "--pruner", "none"), cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    # The first to end may still see the other's last trial training; neither ever saw more than 3.
    assert all(json.loads(o[0])["trials"] <= 3 for o in outs)
    study = tune.summary(tune.load("shared"))
    assert (study["trials"], study["complete"], study["running"], study["fail"]) == (3, 3, 0, 0)
    run_ids = [r["run_id"] for r in study["runs"]]
    assert len(set(run_ids)) == 3 and None not in run_ids  # one run per trial, none shared
    rows = Store().query("SELECT id, status FROM runs WHERE group_id = ?", (tune.group_id("shared"),))
    assert sorted(r["id"] for r in rows) == sorted(run_ids) and {r["status"] for r in rows} == {"finished"}


@pytest.mark.slow
def test_a_tuner_killed_mid_study_is_continued_by_the_same_command(isolated_home):
    cmd = _tune_cmd("killed", 2, "--pruner", "none")  # the killed trial's run, then one more trial
    first = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store()
    # kill -9 while its first trial's run is training (a worker process, which goes on without it)
    wait_for(lambda: store.query("SELECT 1 FROM epoch_metrics e JOIN runs r ON r.id = e.run_id WHERE r.group_id = ?",
                                 (tune.group_id("killed"),)), timeout=300)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    out = json.loads(again.stdout)
    assert (out["trials"], out["complete"], out["running"]) == (2, 2, 0)
    assert out["runs"][0]["run_id"] == store.query("SELECT id FROM runs WHERE group_id = ? ORDER BY created",
                                                   (tune.group_id("killed"),))[0]["id"]  # the first trial kept its run
    assert len(store.query("SELECT id FROM runs WHERE group_id = ?", (tune.group_id("killed"),))) == 2


@pytest.mark.parametrize("pruner", ["hyperband", "median"])
def test_either_pruner_stops_a_third_of_twelve_three_epoch_trials_early_but_never_the_best(pruner, isolated_home):
    """The tuner's own study (journal, pruner by name, the budget's epochs as Hyperband's maximum
    resource), fed curves as the store would: accuracy rising to each trial's level by epoch 3."""
    tuner = tune.Tuner(RunConfig(**TINY), ["scratch"], 12, f"p-{pruner}", pruner=pruner)
    study = tuner.open()
    stopped = {}
    for _ in range(12):
        trial = study.ask()
        level = trial.suggest_float("level", 0.0, 1.0)
        for epoch in range(1, TINY["epochs"] + 1):
            trial.report(level * epoch / TINY["epochs"], epoch)
            if trial.should_prune():
                stopped[trial.number] = epoch
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, level)
    assert len(stopped) >= 4  # at least a third, as the 12-trial study of the issue asks
    levels = {t.number: t.params["level"] for t in study.trials}
    assert max(levels, key=levels.get) not in stopped


def test_a_trial_whose_tuner_stopped_beating_is_failed_and_no_longer_counts(tmp_path, monkeypatch):
    """On a shared database (SQLite here, PostgreSQL in the slow tier) a machine that died mid-trial
    leaves a RUNNING trial that would count forever: after three missed heartbeats the next tuner
    fails it, while its own trials, beating, stay."""
    from optuna.trial import TrialState

    monkeypatch.setenv(tune.HEARTBEAT_ENV, "1")
    tuner = tune.Tuner(RunConfig(**TINY), ["scratch"], 2, "beats", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study = tuner.open()
    dead = study.ask()  # another machine's tuner: it beat once, then its machine went away
    dead.set_user_attr("home", "/another/machine")
    study._storage.record_heartbeat(dead._trial_id)
    live = study.ask()  # this tuner's own, under way
    tuner.flights["run"] = tune._Flight(live)
    assert tuner.counted(study) == 2
    wait_for(lambda: tuner._beat(study, force=True) or tuner.counted(study) == 1, timeout=30, every=0.5)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {dead.number: TrialState.FAIL, live.number: TrialState.RUNNING}

    monkeypatch.setenv(tune.HEARTBEAT_ENV, "soon")
    with pytest.raises(ConfigError, match="TLAB_TUNE_HEARTBEAT_S='soon'"):
        tune.Tuner(RunConfig(**TINY), ["scratch"], 2, "beats", storage=f"sqlite:///{tmp_path / 'study.db'}").open()


def test_compare_draws_the_study_and_offers_the_best_trial_at_full_budget(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.runs import jobs

    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])  # queued is the claim; no worker trains it here

    runs = recorded_study("drawn")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception
    assert any("Search 'drawn': 4 trials" in h.value for h in at.subheader)
    assert any("3 complete, 1 pruned" in c.value for c in at.caption)
    box = at.get("markdown")
    assert any("Best trial: 1" in m.value and runs[1] in m.value for m in box)
    specs = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    curves = specs["Validation accuracy per epoch; pruned trials stop early"]
    lengths = sorted(len(t["x"]) for t in curves["data"] if t.get("x") is not None)
    assert lengths == [1, 3, 3, 3]  # the pruned trial's curve ends after its one epoch
    assert len(specs["Validation accuracy"]["data"]) == 4  # the page's own charts still draw every trial's run
    history = specs["Best validation accuracy so far, trial by trial"]
    assert any(t.get("y") and max(t["y"]) == pytest.approx(0.9) for t in history["data"])
    assert "Which settings mattered (fANOVA importance)" in specs and "Settings of every finished trial, coloured by accuracy" in specs
    at.button(key="best_trial_launch").click().run()  # the winner, all labels, with its scratch twin
    queued = Store().query("SELECT config FROM runs WHERE status = 'queued'")
    cfgs = [json.loads(r["config"]) for r in queued]
    assert len(cfgs) == 1 and cfgs[0]["lr"] == 0.01 and cfgs[0]["labels_per_class"] is None  # scratch: no twin of itself


def test_the_experiment_page_offers_a_search_with_its_command():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("views/experiment.py").run()
    at.radio(key="mode").set_value("Search").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="search_strategies").value == ["full", "partial", "discriminative"]
    at.number_input(key="search_trials").set_value(6).run()
    line = next(c.value for c in at.get("code") if c.value.startswith("python -m core tune"))
    assert "--strategies full,partial,discriminative --trials 6 --study efficientnet_lite0-digits" in line
    assert "--strategy " not in line and "--lr " not in line  # searched, so never fixed by a flag
    assert at.button(key="launch_search") and not at.button(key="launch_search").disabled
