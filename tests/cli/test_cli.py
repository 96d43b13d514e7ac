"""`python -m core ...` as a user runs it: real subprocesses, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli


@pytest.mark.slow
def test_plan_for_feature_extraction_shows_only_the_head_trainable():
    res = run_cli("plan", "--backbone", "resnet18", "--strategy", "feature_extraction", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    trainable = [g["group"] for g in plan["groups"] if not g["frozen"]]
    assert trainable == ["head"]
    assert plan["trainable_params"] == 512 * 10 + 10
    assert plan["total_params"] == plan["trainable_params"] + plan["frozen_params"]
    assert all(m["frozen"] == (m["group"] != "head") for m in plan["modules"])


@pytest.mark.slow
def test_plan_table_for_partial_shows_stem_and_two_stages_frozen():
    res = run_cli("plan", "--backbone", "resnet18", "--strategy", "partial", "--freeze-stages", "2")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines() if line.split()}
    for group in ("stem", "stage1", "stage2"):
        assert "frozen" in rows[group]
    for group in ("stage3", "stage4", "head"):
        assert "trainable" in rows[group]
    assert "trainable" in res.stdout.splitlines()[-1] and "of 11,181,642 parameters" in res.stdout


@pytest.mark.slow
def test_registries_list_weight_availability_offline():
    res = run_cli("backbones", "--json")
    assert res.returncode == 0, res.stderr
    by_name = {b["name"]: b for b in json.loads(res.stdout)}
    assert by_name["efficientnet_lite0"]["weights"] == "bundled"
    assert by_name["resnet18"]["weights"] == "download"  # empty hub cache in tests
    assert by_name["small_cnn"]["weights"] == "none"
    res = run_cli("datasets", "--json")
    names = {d["name"]: d for d in json.loads(res.stdout)}
    assert names["digits"]["availability"] == "bundled" and names["cifar10"]["availability"] == "download"
    res = run_cli("strategies", "--json")
    assert {s["name"] for s in json.loads(res.stdout)} == {
        "feature_extraction", "partial", "full", "discriminative", "gradual", "scratch"}


@pytest.mark.slow
def test_train_json_reports_a_real_run(isolated_home):
    res = run_cli("train", "--backbone", "efficientnet_lite0", "--strategy", "feature_extraction",
                  "--dataset", "digits", "--epochs", "10", "--image-size", "32", "--labels-per-class", "50", "--json",
                  env={"PYTHONPROFILEIMPORTTIME": "1"})  # python -X importtime: what the run imported, on stderr
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("val_accuracy", "test_accuracy", "epochs", "seconds", "images_per_second",
                "trainable_params", "total_params", "device", "checkpoint", "balanced_accuracy", "confusion"):
        assert key in out
    # A run on the bundled digits never imports scikit-learn (1.75 s of CPU per run process): the digits come
    # from its data file, the balanced accuracy and the confusion matrix from a bincount.
    imported = {line.split("|")[-1].strip().split(".")[0] for line in res.stderr.splitlines() if "import time:" in line}
    assert "torch" in imported and not imported & {"sklearn", "scipy"}
    assert len(out["confusion"]) == 10 and sum(map(sum, out["confusion"])) > 0
    # The run is in the store under the id the JSON gives.
    shown = json.loads(run_cli("show", out["run_id"], "--json").stdout)
    assert shown["status"] == "finished" and shown["config"]["backbone"] == "efficientnet_lite0"
    assert shown["last_epoch"]["epoch"] == 10
    assert out["epochs"] == 10 and out["device"] == "cpu"
    # Chance is 0.1. The backbone's pass over each image is the cost; epochs of the head on the cached
    # features are nearly free: 50 per class for 10 epochs at 32 px give 0.78-0.89 over seeds 0-5.
    assert out["test_accuracy"] > 0.7
    assert out["trainable_params"] < out["total_params"]
    ckpt = Path(out["checkpoint"])
    assert ckpt.exists() and ckpt.is_relative_to(isolated_home)
    assert "feature cache" in res.stderr  # the log says the cache was used


@pytest.mark.slow
def test_train_prints_a_human_summary():
    res = run_cli("train", "--backbone", "small_cnn", "--strategy", "scratch", "--epochs", "1",
                  "--image-size", "16", "--labels-per-class", "10", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "finished" in res.stdout and "test accuracy" in res.stdout
    assert "epoch 1:" not in res.stdout  # per-epoch lines go to stderr only with the bar


BAD_INPUT = [
    (["train", "--dataset", "imagenet22k"], "Unknown dataset 'imagenet22k'"),
    (["train", "--backbone", "resnet9000"], "Unknown backbone"),
    (["train", "--epochs", "0"], "epochs must be between"),
    (["train", "--lr", "nan"], "learning rate"),
    (["train", "--labels-per-class", "lots"], "whole number"),
    (["train", "--dataset", "folder:/no/such/place"], "outside the folders this app may read"),
    (["train", "--backbone", "resnet18", "--strategy", "feature_extraction", "--epochs", "1", "--image-size", "16"],
     "resnet18-f37072fd.pth"),
    (["train", "--backbone", "small_cnn", "--strategy", "scratch", "--weights", "/no/such.pt"], "does not exist"),
    (["plan", "--strategy", "everything"], "Unknown strategy"),
    (["train", "--precision", "fp8"], "precision must be one of auto, fp32, bf16, fp16 (got 'fp8')"),
]


@pytest.mark.parametrize("args,needle", BAD_INPUT)
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(args, needle, capsys):
    # The CLI's own entry point, in this process: each message and exit code, without a torch import per case.
    from core.cli.main import main as cli_main

    try:
        code = cli_main(args)
    except SystemExit as e:  # argparse refuses a malformed value itself
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err.strip().splitlines()[-1]  # the one line that says what is wrong (argparse puts usage above it)
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [BAD_INPUT[4], BAD_INPUT[6]], ids=["argparse", "missing-weights"])
def test_bad_input_from_a_real_process_is_one_clear_line_and_exit_code_2(args, needle):
    # As a shell sees it: argparse's refusal, and a refusal from deep in a run (the weights it cannot find).
    res = run_cli(*args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args", [["runs", "--json"], ["cancel", "20261203-000000-abcdef"], ["wait", "nope"],
                                  ["allow", "--list"], ["du"], ["--help"]])
def test_commands_that_only_read_the_store_start_without_torch(args, isolated_home):
    """Listing, waiting, cancelling and the help answer at once: they import neither torch nor the engine
    (torch alone is 2.4 s of CPU to start; a terminal polling `runs` or a script calling `wait` felt it)."""
    import os
    import subprocess
    import sys

    from helpers import NONET, ROOT

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NONET), str(ROOT)])}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "core", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 2), out.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "core.cli.main" in imported and not imported & {"torch", "timm", "sklearn"}
    if args[0] == "cancel":  # the answer itself is still the clear one
        assert "No run '20261203-000000-abcdef'" in out.stderr
