"""timm's catalogue from a terminal: `backbones --all FILTER` lists pretrained
names with where their weights are; `timm:` names work wherever a backbone
does (plan, train, race), with one clear line when they can't."""

from __future__ import annotations

import json

import pytest

from core.cli.main import main as cli_main
from helpers import fake_hf_cache, run_cli


def _cli(args, capsys):
    code = cli_main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_backbones_all_lists_the_catalogue_with_weight_availability(capsys, tmp_path, monkeypatch):
    code, out, _ = _cli(["backbones", "--all", "convnext_at", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["timm:convnext_atto.d2_in1k", "timm:convnext_atto_ols.a2_in1k"]
    assert [r["weights"] for r in rows] == ["download", "download"]  # nothing cached here
    assert [r["params"] for r in rows] == [3_695_520, 3_702_912]
    code, out, _ = _cli(["backbones", "--all", "convnext_atto.d2"], capsys)
    assert code == 0 and "timm:convnext_atto.d2_in1k  download  3.7M" in out and "0 cached in" in out


def test_plan_of_a_timm_name_and_its_size_limit(capsys):
    code, out, _ = _cli(["plan", "--backbone", "timm:regnetx_002", "--strategy", "partial", "--image-size", "32",
                         "--json"], capsys)
    assert code == 0
    plan = json.loads(out)
    assert [g["group"] for g in plan["groups"]] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert [g["frozen"] for g in plan["groups"]] == [True, True, True, False, False, False]
    assert plan["note"] == ""  # RegNet has BatchNorm
    code, out, _ = _cli(["plan", "--backbone", "timm:vit_tiny_patch16_224", "--image-size", "32"], capsys)
    assert code == 0 and "has no BatchNorm (it normalises with LayerNorm" in out
    code, _, err = _cli(["plan", "--backbone", "timm:vit_tiny_patch16_224", "--image-size", "50"], capsys)
    assert code == 2 and "nearest allowed size is 48 px or 64 px" in err.strip().splitlines()[-1]
    code, _, err = _cli(["train", "--backbone", "timm:convnext_atto", "--strategy", "full", "--image-size", "32",
                         "--epochs", "1", "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]  # offline, nothing cached: refused, naming the model, the cache and the file
    assert "timm:convnext_atto" in line and "model.safetensors" in line and "hub" in line


@pytest.mark.slow  # a race of two real runs, in a worker process
def test_a_race_over_a_catalogue_name_runs_on_digits(tmp_path, capsys, monkeypatch):
    """The name `backbones --all` lists is the name a race takes; with its weights in the cache the listing
    says so. (Other families train through the engine in tests/train/test_timm_runs.py; the race is the CLI's
    and the worker's part, the same for every name.)"""
    code, out, _ = _cli(["backbones", "--all", "resnet10t", "--json"], capsys)
    name = json.loads(out)[0]["name"]
    assert code == 0 and name == "timm:resnet10t.c3_in1k"
    fake_hf_cache(tmp_path / "hf", [name])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, out, _ = _cli(["backbones", "--all", "resnet10t", "--json"], capsys)
    assert code == 0 and all(r["weights"] == "cached" for r in json.loads(out))
    res = run_cli("race", "--backbone", name, "--strategies", "feature_extraction,partial", "--dataset", "digits",
                  "--epochs", "1", "--image-size", "32", "--labels-per-class", "10", "--json")
    assert res.returncode == 0, res.stderr
    runs = json.loads(res.stdout)["runs"]
    assert [r["strategy"] for r in runs] == ["feature_extraction", "partial"]
    assert all(r["status"] == "finished" and r["test_accuracy"] is not None for r in runs)
    assert runs[0]["trainable_params"] < runs[1]["trainable_params"]  # only the head against the later stages
