"""The skip-connection demo's stacks, their gradients at initialisation, the
CLI, and a backbone's stage table derived from the model."""

from __future__ import annotations

import json

import pytest
import torch

from core.cli import main as cli
from core.errors import ConfigError
from core.lessons import skipdemo, stages
from core.train import backbones

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int = 32, size: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_plain_and_residual_stacks_differ_only_by_the_skip():
    for depth in (8, 20):
        plain, res = skipdemo.Stack(depth, False), skipdemo.Stack(depth, True)
        assert len(plain.weight_layers()) == len(res.weight_layers()) == depth
        assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in res.parameters())
    with pytest.raises(ConfigError, match="6n\\+2"):
        skipdemo.Stack(10, True)


@pytest.mark.parametrize("bn", [True, False])
def test_deep_plain_stacks_have_uneven_gradients_at_init_and_residual_ones_do_not(bn):
    x, y = _batch()
    spreads = {}
    for residual in (False, True):
        torch.manual_seed(0)
        norms = skipdemo.layer_grad_norms(skipdemo.Stack(56, residual, bn), x, y)
        convs = norms[:-1]
        spreads[residual] = max(convs) / max(min(convs), 1e-45)
        if not bn and not residual:
            assert convs[0] < 1e-3 * convs[-1]  # vanishing towards the input
        if bn and not residual:
            assert convs[0] > 10 * convs[-1]  # exploding towards the input
    assert spreads[False] > 50 * spreads[True], spreads


def test_skip_demo_cli_gives_rows_per_depth_and_kind(capsys, tmp_path):
    out_file = tmp_path / "demo.json"
    assert cli.main(["skip-demo", "--depths", "8,14", "--steps", "3", "--json", "--out", str(out_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert [(r["depth"], r["residual"]) for r in rows] == [(8, False), (8, True), (14, False), (14, True)]
    for r in rows:
        assert {"final_loss", "first_layer_grad_norm", "grad_norm_spread"} <= set(r)
        assert r["final_loss"] > 0 and r["grad_norm_spread"] >= 1
    saved = json.loads(out_file.read_text())
    assert len(saved["curves"]) == 4 and len(saved["curves"][0]["losses"]) == 3
    assert len(saved["curves"][2]["layer_grad_norms"]) == 14
    assert cli.main(["skip-demo", "--depths", "9"]) == 2


def test_resnet18_stage_table_is_the_textbook_one():
    spec = backbones.get("resnet18")
    rows = stages.stage_table(spec, 224)
    got = [(r["stage"], r["output_shape"], r["blocks"]) for r in rows]
    assert got == [("stem", "64x112x112", 1), ("maxpool", "64x56x56", 0), ("stage1", "64x56x56", 2),
                   ("stage2", "128x28x28", 2), ("stage3", "256x14x14", 2), ("stage4", "512x7x7", 2),
                   ("avgpool", "512x1x1", 0), ("head", "1000", 1)]
    assert sum(r["params"] for r in rows) == spec.param_count(1000) == 11_689_512
    small = {r["stage"]: r["output_shape"] for r in stages.stage_table(spec, 64)}
    assert small["stage4"] == "512x2x2"  # derived for the input size, not typed in


def test_vit_stage_table_shows_tokens():
    rows = {r["stage"]: r for r in stages.stage_table(backbones.get("vit_small_dino"), 64)}
    assert rows["stage1"]["output_shape"] == "17x384"  # 4x4 patches + the class token
    assert rows["stage4"]["blocks"] == 3 and rows["head"]["output_shape"] == "1000"
