"""The service layer pages and the CLI share: a form (a mapping) becomes a
config, a run gets its from-scratch twin, a group is checked before anything
is queued, the layer plan previews its thawing."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.runs.store import Store
from core.service import forms, launching
from core.train.config import RunConfig


def test_a_form_becomes_a_config_with_defaults_for_what_it_leaves_empty():
    cfg = forms.config_from({"backbone": "small_cnn", "strategy": "scratch", "lr": None, "labels_per_class": None,
                             "processes": None, "epochs": 2})
    assert cfg == RunConfig(backbone="small_cnn", strategy="scratch", epochs=2)
    with pytest.raises(ConfigError, match="Unknown setting"):
        forms.config_from({"backbone": "small_cnn", "epochz": 2})


def test_a_pretrained_run_gets_a_scratch_twin_and_a_scratch_run_does_not():
    runs, side_by_side = launching.with_scratch_twin(RunConfig(strategy="feature_extraction", lr=0.01))
    assert [(c.strategy, c.name, c.lr) for c in runs] == [("feature_extraction", "transfer", 0.01),
                                                           ("scratch", "scratch twin", None)]
    assert side_by_side
    assert launching.with_scratch_twin(RunConfig(strategy="full"), twin=False) == ([RunConfig(strategy="full")], False)
    assert launching.with_scratch_twin(RunConfig(backbone="small_cnn", strategy="scratch"))[0] == [
        RunConfig(backbone="small_cnn", strategy="scratch")]
    runs, side_by_side = launching.with_scratch_twin(RunConfig(processes=2))  # several processes each: one after the other
    assert len(runs) == 2 and not side_by_side


def test_a_group_with_one_bad_run_is_refused_before_any_is_queued(isolated_home):
    good = RunConfig(backbone="small_cnn", strategy="scratch", image_size=16)
    with pytest.raises(ConfigError, match="Unknown backbone"):
        launching.prepare([good, good.replace(backbone="resnet9000")])
    assert Store().runs().empty


def test_the_plan_preview_lists_the_trainable_parameters_at_each_thaw():
    gradual = forms.preview_plan(RunConfig(backbone="resnet18", strategy="gradual", epochs=3, unfreeze_every=1))
    thaw = gradual.thaw()
    assert [e for e, _ in thaw] == [1, 2, 3]
    assert thaw[0][1] == gradual.plan.trainable_params and thaw[0][1] < thaw[1][1] < thaw[2][1]
    full = forms.preview_plan(RunConfig(backbone="resnet18", strategy="full"))
    assert full.thaw() == [(1, full.plan.total_params)]
