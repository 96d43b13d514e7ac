"""Domain adaptation on a real (tiny) trained run: AdaBN, DANN, the
gradient-reversal layer, the built-in shifted target and unlabelled folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main as cli
from core.errors import ConfigError, DataError
from core.lessons import adapt
from core.lessons.advisor import batchnorm_layers
from core.train import data, engine
from core.train.checkpoint import CheckpointError, load_run_model
from core.train.config import RunConfig

# One xdist worker runs this module: its module-scoped training then happens once, not once per worker.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("adapt")]


def test_grad_reverse_flips_the_gradient_sign():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = adapt.grad_reverse(x, 0.7)
    assert torch.equal(y, x)  # identity forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.7 * w)
    # the same through autograd.grad, and a zero lambda stops the gradient
    x2 = torch.randn(5, requires_grad=True)
    (g,) = torch.autograd.grad((adapt.grad_reverse(x2, 0.0) * 3).sum(), x2)
    assert torch.equal(g, torch.zeros(5))
    assert adapt.dann_lambda(0.0) == 0.0 and 0.99 < adapt.dann_lambda(1.0) < 1.0


@pytest.fixture(scope="module")
def run_home(tmp_path_factory):
    """A small CNN trained for one epoch on the digits at 16 px, in its own data folder."""
    home = tmp_path_factory.mktemp("adapt_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("TLAB_HOME", str(home))
    try:
        cfg = RunConfig(backbone="small_cnn", strategy="scratch", image_size=16, epochs=1, device="cpu", seed=0)
        result = engine.train(cfg, run_dir=home / "r1", run_id="r1")
        assert result.status == "finished"
    finally:
        mp.undo()
    return home


@pytest.fixture
def home(run_home, monkeypatch):
    monkeypatch.setenv("TLAB_HOME", str(run_home))
    return run_home


def test_adabn_changes_only_the_batchnorm_statistics(home):
    loaded = load_run_model(home / "r1")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    target = data.load("digits_shifted", 16, 0).train.x
    first_bn = batchnorm_layers(loaded.model)[0][1]
    seen = []
    hook = first_bn.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach()))
    n = adapt.adabn(loaded.model, lambda i, j: data.to_input(target[i:j], loaded.spec.mean, loaded.spec.std), len(target))
    hook.remove()
    assert n == len(batchnorm_layers(loaded.model))
    after = loaded.model.state_dict()
    params = {name for name, _ in loaded.model.named_parameters()}
    for key, value in before.items():
        if key in params:
            assert torch.equal(value, after[key]), f"weight {key} changed"
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(before[k], after[k]) for k in stats)
    # the first layer's new mean is the target's own activation mean
    acts = torch.cat(seen)
    assert torch.allclose(first_bn.running_mean, acts.mean((0, 2, 3)), atol=1e-4)
    assert not first_bn.training and first_bn.momentum == 0.1  # left as found


def test_adabn_on_digits_shifted_from_the_cli_reports_and_saves(home, capsys):
    assert cli.main(["adapt", "--run", "r1", "--target", "digits_shifted", "--method", "adabn", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "embedding" not in r and r["method"] == "adabn" and r["steps"] == 0
    assert 0.5 < r["source_accuracy"] <= 1.0
    assert r["target_after"] > r["target_before"] + 0.05  # the appearance shift is the kind AdaBN undoes
    assert r["gap_after"] < r["gap_before"]  # the two clouds come together
    saved = adapt.saved_results("r1")[0]
    assert saved["saved"] == r["saved"] and saved["target_after"] == r["target_after"]
    emb = saved["embedding"]
    assert len(emb["before"]["x"]) == len(emb["after"]["x"]) == len(emb["domain"]) == len(emb["label"])
    assert set(emb["domain"]) == {"source", "target"}
    # the run itself is untouched: its checkpoint still gives the unadapted accuracy
    shifted = data.load("digits_shifted", 16, 0).test
    assert adapt.accuracy(load_run_model(home / "r1"), shifted.x, shifted.y) == pytest.approx(r["target_before"])


def test_dann_runs_end_to_end(home):
    r = adapt.adapt("r1", "digits_shifted", "dann", steps=4, lr=1e-3)
    assert r.steps == 4 and [row["step"] for row in r.curve] == [1, 2, 3, 4]
    lambdas = [row["lambda"] for row in r.curve]
    assert lambdas[0] == 0.0 and lambdas == sorted(lambdas)
    assert all(np.isfinite([row["label_loss"], row["domain_loss"]]).all() for row in r.curve)
    assert r.target_before is not None and r.target_after is not None and r.source_accuracy is not None
    assert "source accuracy before DANN" in r.note


def test_an_unlabelled_folder_is_a_target_without_a_score(home, tmp_path):
    g = np.random.default_rng(0)
    for i in range(6):
        sub = tmp_path / "imgs" / ("a" if i < 3 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    r = adapt.adapt("r1", f"folder:{tmp_path / 'imgs'}", "adabn")
    assert r.target_before is None and r.target_after is None
    assert sum(r.predictions_before.values()) == sum(r.predictions_after.values()) == 6
    assert r.embedding["domain"].count("target") == 6
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    with pytest.raises(DataError, match="No readable image"):
        adapt.adapt("r1", f"folder:{tmp_path / 'empty'}", "adabn")
    with pytest.raises(DataError, match="does not exist"):
        adapt.adapt("r1", f"folder:{tmp_path / 'missing'}", "adabn")


def test_bad_requests_say_what_to_do(home):
    with pytest.raises(ConfigError, match="adabn, dann"):
        adapt.adapt("r1", "digits_shifted", "coral")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        adapt.adapt("nope", "digits_shifted", "adabn")


def test_digits_shifted_is_the_digits_under_a_fixed_change_of_appearance():
    a, b = data.load_raw("digits", 16), data.load_raw("digits_shifted", 16)
    assert torch.equal(a.y, b.y) and a.class_names == b.class_names
    assert b.x.float().std() < 0.6 * a.x.float().std()  # lower contrast
    assert b.x.float().mean() > a.x.float().mean() + 50  # a grey background
    assert torch.equal(data.shift_appearance(a.x), b.x)  # seeded: the same every time
