"""The LR range test: the model and optimizer come back bit for bit, the
suggestion sits where the loss falls fastest, the CLI and the page's
subprocess give the same answer."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.cli import main as cli
from core.errors import ConfigError
from core.insight import lr_finder
from core.service import launching
from core.train import backbones, data, strategies
from core.train.config import RunConfig

CFG = RunConfig(backbone="small_cnn", strategy="scratch", image_size=16, batch_size=32, device="cpu", seed=3)


def _state(model, optimizer):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {name: m.training for name, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
            {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for i, s in enumerate(optimizer.state.values())})


def test_range_test_restores_model_and_optimizer_bit_for_bit(one_thread):
    cfg = CFG.replace(strategy="partial", backbone="small_cnn", weights=None)
    spec = backbones.get("small_cnn")
    torch.manual_seed(0)
    bundle = data.load("digits", 16, 0)
    model = backbones.build(spec, 10, 16)
    plan = strategies.make_plan(spec, model, cfg, 0)  # stem + 2 stages frozen: flags and BN modes to restore
    optimizer = strategies.build_optimizer(spec, model, plan, 1e-4)
    strategies.set_train_mode(spec, model, plan)
    for i in range(3):  # some optimizer state (AdamW moments, step counts) and moved BatchNorm statistics
        xb = data.batch_input(bundle.train.x[i * 32 : (i + 1) * 32], spec.mean, spec.std)
        loss = F.cross_entropy(model(xb), bundle.train.y[i * 32 : (i + 1) * 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights, modes, flags, groups, opt_state = _state(model, optimizer)
    assert opt_state and any(not f for f in flags.values()) and any(not m for m in modes.values())

    result = lr_finder.range_test(model, spec, optimizer, bundle.train.x, bundle.train.y, base_lr=1e-3,
                                  steps=25, start_lr=1e-4, end_lr=10)
    assert len(result.losses) >= 8
    after = _state(model, optimizer)
    assert after[0].keys() == weights.keys()
    assert all(torch.equal(after[0][k], v) for k, v in weights.items()), "weights or BatchNorm statistics changed"
    assert after[1] == modes and after[2] == flags and after[3] == groups
    assert after[4].keys() == opt_state.keys()
    for i, s in opt_state.items():
        assert all(torch.equal(after[4][i][k], v) if torch.is_tensor(v) else after[4][i][k] == v for k, v in s.items())
    # ...and the range test really trained: it is the restore that put things back
    assert max(result.losses) > 2 * min(result.losses)


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.geomspace(1e-6, 1, 120)
    x = np.log10(lrs)
    loss = 2.3 - 2.0 / (1 + np.exp(-(x + 3) * 3))  # falls fastest at 1e-3
    loss = np.where(x > -1, loss + (x + 1) ** 2 * 20, loss)  # blows up past 0.1
    lr, reason = lr_finder.suggest(lrs, loss)
    assert lr == pytest.approx(1e-3, rel=0.15) and "steepest" in reason
    assert lr_finder.suggest(lrs, np.linspace(1, 5, 120))[0] is None  # only rising: no suggestion
    assert lr_finder.suggest(lrs[:3], loss[:3])[0] is None


def test_bad_ranges_are_refused():
    spec = backbones.get("small_cnn")
    model = backbones.build(spec, 2, 16)
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ConfigError, match="0 < start < end"):
        lr_finder.range_test(model, spec, opt, x, y, 1e-3, start_lr=1.0, end_lr=1e-3)
    with pytest.raises(ConfigError, match="between 5 and 10,000 steps"):
        lr_finder.range_test(model, spec, opt, x, y, 1e-3, steps=2)


def test_find_lr_for_a_config_suggests_a_rate_for_the_form(one_thread):
    """The range test as the form's run would start (the page runs this same
    function in a background task: tests/ui/test_app_inspect.py)."""
    result = lr_finder.find_lr(CFG, steps=40)
    assert result.suggestion is not None and 1e-6 < result.suggestion < 1.0
    assert result.lrs[0] == pytest.approx(1e-7) and len(result.lrs) == len(result.losses) == len(result.smoothed)
    assert result.meta["train_images"] > 1000 and result.meta["device"] == "cpu"
    assert min(result.smoothed) < result.smoothed[0] - 0.3  # the loss really fell somewhere in the range
    with pytest.raises(ConfigError, match="Unknown backbone"):  # checked before a background task starts
        launching.start_lr_finder(CFG.replace(backbone="nope"), steps=10)


def test_cli_lr_find_prints_a_learning_rate(isolated_home, capsys, one_thread):
    out = isolated_home / "lr.csv"
    code = cli.main(["lr-find", "--backbone", "small_cnn", "--strategy", "scratch", "--image-size", "16",
                     "--steps", "30", "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Suggested learning rate" in printed and "train with --lr" in printed
    rows = out.read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed_loss" and len(rows) > 10
