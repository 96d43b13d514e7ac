"""Strategy races, labels-per-class sweeps and knowledge distillation, end to
end offline: real (tiny) trainings, a real store, the Compare page."""

from __future__ import annotations

import json
import math
import os
import sqlite3

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.errors import ConfigError
from core.runs import experiments, jobs
from core.runs.store import Store
from core.train import distill
from core.train.config import RunConfig
from helpers import ROOT, digits_folder, run_cli


pytestmark = pytest.mark.usefixtures("one_thread")


def run_group_here(kind: str, cfgs: list[RunConfig], monkeypatch) -> list[dict]:
    """Queue a group and drain it with a worker loop in this process (no subprocess start-up):
    on one thread (tiny inputs) and gone as soon as the queue is empty."""
    monkeypatch.setattr(jobs, "ensure_workers", lambda store=None: [])
    monkeypatch.setattr(jobs, "_cores", lambda: 1)
    monkeypatch.setattr(jobs, "IDLE_EXIT_SECONDS", -1.0)
    _, ids = experiments.launch(kind, cfgs)
    assert jobs.worker_main() == 0
    return [Store().run(i) for i in ids]


def compare_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception
    return at


def chart_titles(at: AppTest) -> list[str]:
    out = []
    for c in at.get("plotly_chart"):
        layout = json.loads(c.proto.spec)["layout"]
        title = layout.get("title", {})
        out.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return out


# --- the distillation loss -----------------------------------------------------------


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_kd_loss_matches_a_direct_computation():
    s = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    t = np.array([[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0]])
    y = np.array([0, 2])
    T, alpha = 4.0, 0.9
    p_t, p_s = _softmax(t / T), _softmax(s / T)
    kl = float(np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1)))
    ce = float(np.mean(-np.log(_softmax(s)[np.arange(2), y])))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    args = (torch.tensor(s), torch.tensor(t), torch.tensor(y))
    assert distill.kd_loss(*args, T, alpha).item() == pytest.approx(expected, rel=1e-6)
    assert distill.kd_loss(*args, T, 0.0).item() == pytest.approx(ce, rel=1e-6)  # alpha 0: plain cross-entropy
    assert distill.kd_loss(*args, T, 1.0).item() == pytest.approx(T * T * kl, rel=1e-6)  # alpha 1: soft targets only
    # The T^2 factor: the soft term at T=2 is 4x the raw KL at T=2.
    p2t, p2s = _softmax(t / 2), _softmax(s / 2)
    kl2 = float(np.mean(np.sum(p2t * (np.log(p2t) - np.log(p2s)), axis=1)))
    assert distill.kd_loss(*args, 2.0, 1.0).item() == pytest.approx(4 * kl2, rel=1e-6)
    # A student that equals the teacher has no soft loss.
    assert distill.kd_loss(torch.tensor(t), torch.tensor(t), torch.tensor(y), T, 1.0).item() == pytest.approx(0, abs=1e-9)


# --- steps budget --------------------------------------------------------------------


def test_a_step_budget_is_the_same_whatever_the_labels(monkeypatch):
    cfgs = [RunConfig(backbone="mlp", strategy="scratch", image_size=16, device="cpu", labels_per_class=k,
                      steps=7, epochs=1, batch_size=32) for k in (1, None)]
    rows = run_group_here("", cfgs, monkeypatch)
    s = Store()
    for row in rows:
        assert row["status"] == "finished"
        assert len(s.metrics([row["id"]], "step")) == 7
    assert "train 10," in s.events(rows[0]["id"])["message"].iloc[0]  # 1 label x 10 classes


# --- race ----------------------------------------------------------------------------


def test_race_configs_share_budget_and_seed():
    cfgs = experiments.race_configs(RunConfig(epochs=2, seed=5), ["feature_extraction", "full", "scratch"])
    assert [c.strategy for c in cfgs] == ["feature_extraction", "full", "scratch"]
    assert {(c.epochs, c.seed, c.image_size, c.dataset) for c in cfgs} == {(2, 5, 64, "digits")}
    with pytest.raises(ConfigError, match="at least two"):
        experiments.race_configs(RunConfig(), ["full"])
    with pytest.raises(ConfigError, match="Unknown strategy"):
        experiments.race_configs(RunConfig(), ["full", "warp_speed"])


@pytest.mark.slow
def test_a_tiny_race_runs_and_compare_shows_its_charts(monkeypatch):
    # The claim is about the group and the page, not about learning: 2 labels per class, 16 px,
    # ~90 validation and test images.
    base = RunConfig(backbone="efficientnet_lite0", image_size=16, epochs=1, labels_per_class=2, batch_size=10,
                     val_fraction=0.05, test_fraction=0.05, device="cpu")
    rows = run_group_here(experiments.RACE, experiments.race_configs(base, ["feature_extraction", "partial", "scratch"]), monkeypatch)
    assert [r["status"] for r in rows] == ["finished"] * 3 and {r["kind"] for r in rows} == {"race"}
    runs = Store().runs()
    params = dict(zip(runs["strategy"], runs["trainable_params"]))
    assert params["feature_extraction"] < params["partial"] < params["scratch"]
    at = compare_page()
    titles = chart_titles(at)
    assert "Accuracy vs trainable parameters" in titles and "What each strategy trains" in titles
    fig = json.loads(at.get("plotly_chart")[titles.index("Accuracy vs trainable parameters")].proto.spec)
    assert sorted(t["name"] for t in fig["data"]) == ["feature_extraction", "partial", "scratch"]
    assert len(at.table[0].value) == 3


@pytest.mark.slow
def test_race_cli_prints_one_row_per_strategy(tmp_path):
    res = run_cli("race", "--backbone", "efficientnet_lite0", "--strategies", "feature_extraction,scratch",
                  "--dataset", digits_folder(tmp_path / "digits", 6), "--epochs", "1", "--image-size", "16", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [r["strategy"] for r in out["runs"]] == ["feature_extraction", "scratch"]
    assert all(r["status"] == "finished" and 0 <= r["test_accuracy"] <= 1 for r in out["runs"])


# --- labels-per-class sweep ------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_sweep_summarises_over_seeds_and_compare_draws_the_curve(monkeypatch, tmp_path):
    # 6 real digits per class: "all" labels and the validation/test passes stay a few dozen images.
    base = RunConfig(backbone="efficientnet_lite0", image_size=16, device="cpu", batch_size=8,
                     dataset=digits_folder(tmp_path / "digits", 6))
    cfgs = experiments.sweep_configs(base, ["feature_extraction", "scratch"], [1, None], seeds=2, steps=3)
    assert len(cfgs) == 8 and {c.steps for c in cfgs} == {3}
    rows = run_group_here(experiments.SWEEP, cfgs, monkeypatch)
    assert all(r["status"] == "finished" for r in rows)
    summary = experiments.summarise_sweep(Store().runs())
    assert summary[["strategy", "labels_per_class", "n"]].values.tolist() == [
        ["feature_extraction", 1, 2], ["feature_extraction", "all", 2], ["scratch", 1, 2], ["scratch", "all", 2]]
    assert summary["mean"].between(0, 1).all() and (summary["std"] >= 0).all()
    at = compare_page()
    assert chart_titles(at) == ["Test accuracy vs labels per class"]
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sorted(t["name"] for t in fig["data"] if t.get("showlegend", True) is not False)[:2] == ["feature_extraction", "scratch"]
    table = at.table[0].value
    assert list(table["n"]) == [2, 2, 2, 2]


@pytest.mark.slow
def test_sweep_cli_prints_rows_of_mean_std_n(tmp_path):
    res = run_cli("sweep-labels", "--backbone", "efficientnet_lite0", "--strategies", "feature_extraction,scratch",
                  "--dataset", digits_folder(tmp_path / "digits", 6), "--labels", "2,all", "--seeds", "1", "--steps", "2", "--batch-size", "8", "--image-size", "16", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["rows"]
    assert [(r["strategy"], r["labels_per_class"], r["n"]) for r in rows] == [
        ("feature_extraction", 2, 1), ("feature_extraction", "all", 1), ("scratch", 2, 1), ("scratch", "all", 1)]
    assert all(set(r) == {"strategy", "labels_per_class", "mean", "std", "n"} for r in rows)


@pytest.mark.slow
def test_bad_sweep_labels_are_a_clear_error():
    res = run_cli("sweep-labels", "--labels", "1,five")
    assert res.returncode == 2 and "whole numbers or 'all'" in res.stderr


# --- distillation --------------------------------------------------------------------------


@pytest.fixture
def teacher(monkeypatch) -> dict:
    # The students inherit its data: 5 labels per class and ~90 validation and test images keep them small too.
    cfg = RunConfig(backbone="efficientnet_lite0", strategy="feature_extraction", image_size=16, epochs=1, device="cpu",
                    labels_per_class=5, val_fraction=0.05, test_fraction=0.05)
    return jobs.run_foreground(cfg)


def test_distillation_uses_cached_teacher_logits_and_compare_weighs_the_trade(teacher, monkeypatch):
    cfgs = experiments.distill_configs(teacher, "small_cnn", 4.0, 0.9, epochs=1, image_size=16)
    assert cfgs[0].teacher == teacher["id"] and cfgs[1].teacher is None
    assert cfgs[0].dataset == "digits" and cfgs[0].seed == 0
    kd, alone = run_group_here(experiments.DISTILL, cfgs, monkeypatch)
    assert kd["status"] == alone["status"] == "finished"
    assert any("computed once" in m for m in Store().events(kd["id"])["message"])
    prof = distill.profile(kd["id"], kd["test_accuracy"])
    big = distill.profile(teacher["id"], teacher["test_accuracy"])
    assert prof["params"] < big["params"] and prof["model_mb"] < big["model_mb"]
    assert prof["latency_ms"] > 0 and math.isfinite(prof["latency_ms"])
    at = compare_page()
    table = at.table[0].value
    assert list(table["role"]) == ["teacher", "student + KD", "student alone"]
    assert "Teacher vs student" in " ".join(h.value for h in at.subheader)


@pytest.mark.slow
def test_distill_cli_reports_teacher_student_kd_and_student(teacher):
    res = run_cli("distill", "--teacher", teacher["id"], "--student", "small_cnn", "--epochs", "1",
                  "--image-size", "16", "--json", timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for role in ("teacher", "student_kd", "student"):
        assert {"test_accuracy", "params", "latency_ms"} <= set(out[role])
        assert 0 <= out[role]["test_accuracy"] <= 1 and out[role]["latency_ms"] > 0
    assert out["student_kd"]["params"] == out["student"]["params"] < out["teacher"]["params"]


@pytest.mark.slow
def test_a_teacher_that_did_not_finish_is_refused():
    s = Store()
    run_id = s.add_run(RunConfig().to_json())
    with pytest.raises(ConfigError, match="finished"):
        experiments.distill_configs(s.run(run_id), "small_cnn", 4.0, 0.9)
    res = run_cli("distill", "--teacher", "nope")
    assert res.returncode == 2 and "No run 'nope'" in res.stderr


# --- the store's schema moves forward --------------------------------------------------------


def test_a_version_1_store_migrates_and_keeps_its_runs(isolated_home):
    from core.runs import store as store_mod

    isolated_home.mkdir(parents=True)
    db = isolated_home / "tlab.sqlite"
    c = sqlite3.connect(db)
    for stmt in store_mod.MIGRATIONS[0].split(";"):
        if stmt.strip():
            c.execute(stmt)
    c.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    c.execute("PRAGMA user_version = 1")
    c.execute("INSERT INTO runs (id, group_id, config, status, created) VALUES ('old', 'old', ?, 'finished', 0)",
              (RunConfig().to_json(),))
    c.commit()
    c.close()
    s = Store()
    assert s.query("PRAGMA user_version")[0][0] == store_mod.SCHEMA_VERSION >= 2
    assert s.run("old")["status"] == "finished" and s.run("old")["kind"] == ""
    assert os.path.exists(db)
