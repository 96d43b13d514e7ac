"""The self-supervised ViT-S/16 (DINO) backbone: registry entry, the same
offline message as other downloadable backbones, and loading its checkpoint
(in DINO's own key layout) at a small image size."""

from __future__ import annotations

import pytest
import torch

from core.errors import WeightsUnavailable
from core.train import backbones, strategies, weights
from core.train.config import RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = backbones.get("vit_small_dino")


def test_offline_and_not_cached_it_says_which_file_to_put_where():
    assert weights.availability(SPEC) == "download"
    with pytest.raises(WeightsUnavailable) as err:
        backbones.create_model(SPEC, 10, 32, pretrained=True)
    msg = str(err.value)
    assert "dino_deitsmall16_pretrain.pth" in msg and str(weights.cache_dir()) in msg
    assert "--weights PATH" in msg and "efficientnet_lite0" in msg


def test_a_cached_dino_checkpoint_loads_at_a_small_image_size():
    # A checkpoint shaped like DINO's release: 224 px position embedding, no classification head.
    torch.manual_seed(0)
    donor = backbones.build(SPEC, 1000, 224)
    state = {k: v for k, v in donor.state_dict().items() if not k.startswith("head.")}
    path = weights.expected_file(SPEC)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    assert weights.availability(SPEC) == "cached"

    model = backbones.create_model(SPEC, 10, 64, pretrained=True)
    assert torch.equal(model.patch_embed.proj.weight, donor.patch_embed.proj.weight)
    assert torch.equal(model.blocks[11].mlp.fc2.weight, donor.blocks[11].mlp.fc2.weight)
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 384)  # resampled from 1 + 14 x 14
    assert torch.equal(model.pos_embed[:, 0], donor.pos_embed[:, 0])  # the class token's entry is kept
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_strategies_plan_and_train_mode_work_with_parameters_as_group_members():
    with torch.device("meta"):
        model = backbones.build(SPEC, 10, 32)
    plan = strategies.make_plan(SPEC, model, RunConfig(backbone="vit_small_dino", strategy="partial", freeze_stages=1), 0)
    table = {r["group"]: r for r in plan.group_table()}
    assert table["stem"]["frozen"] and table["stage1"]["frozen"] and not table["stage2"]["frozen"]
    # the class token and position embedding sit in the stem
    stem_entry = next(e for e in plan.entries if e.module == "")
    assert stem_entry.group == "stem" and stem_entry.params == 384 + 5 * 384
    strategies.set_train_mode(SPEC, model, plan)
    assert not model.patch_embed.training and model.blocks[5].training
