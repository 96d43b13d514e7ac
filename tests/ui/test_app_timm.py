"""The Experiment page's timm catalogue through AppTest: a search lists
matching pretrained models with parameter counts and weight availability,
picking one previews its derived layer map (meta device, nothing
downloaded), and an image size it can't take is named with the nearest allowed."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


def test_search_pick_and_preview_a_timm_backbone():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.radio(key="backbone_source").set_value("timm catalogue").run()
    assert any("Type part of a name" in i.value for i in at.info)
    at.text_input(key="timm_query").set_value("regnetx_00").run()
    assert not at.exception, at.exception
    table = at.table[0].value
    assert list(table["model"]) == ["regnetx\\_002.pycls\\_in1k", "regnetx\\_004.pycls\\_in1k",
                                    "regnetx\\_004\\_tv.tv2\\_in1k", "regnetx\\_006.pycls\\_in1k",
                                    "regnetx\\_008.pycls\\_in1k", "regnetx\\_008.tv2\\_in1k"]
    assert list(table["params"])[0] == "2.7M" and set(table["weights"]) == {"download"}
    assert at.selectbox(key="timm_model").value == "timm:regnetx_002.pycls_in1k"
    at.selectbox(key="strategy").set_value("partial")
    at.number_input(key="image_size").set_value(32).run()
    assert not at.exception, at.exception
    assert any("regnetx_002.pycls_in1k: 2.7M params" in c.value.replace("\\", "") for c in at.caption)
    figure = at.get("plotly_chart")[0].proto.spec
    assert all(g in figure for g in ("stem", "stage4", "head"))
    assert any("pretrained weights are not cached here" in i.value for i in at.info)  # with where to put the file
    at.number_input(key="image_size").set_value(16).run()
    assert any("nearest allowed size is 32 px" in w.value for w in at.warning)
