"""The Experiment page's backbone choice: the curated short list, or any
pretrained timm model found by a search over timm's catalogue (names with
parameter counts and where their weights are)."""

from __future__ import annotations

import streamlit as st

from core.service import forms
from core.train import backbones, weights
from ui.common import plain, plain_rows

SHORT_LIST, CATALOGUE = "Short list", "timm catalogue"
NOTE = {"bundled": "weights bundled", "cached": "weights cached", "download": "weights download on first use",
        "none": "no pretrained weights"}


@st.cache_data(show_spinner=False, max_entries=64)
def _search(query: str) -> forms.CatalogueMatches:
    return forms.search_backbones(query)


def pick_backbone(default: str) -> str:
    """The backbone name the person chose (a curated name or `timm:<model.tag>`)."""
    source = st.radio("Backbone from", [SHORT_LIST, CATALOGUE], horizontal=True, key="backbone_source",
                      help="The short list is hand-picked; the catalogue is every pretrained model timm has.")
    if source == SHORT_LIST:
        names = list(backbones.REGISTRY)
        availability = {n: weights.availability(backbones.get(n)) for n in names}
        return st.selectbox("Backbone", names, index=names.index(default), key="backbone",
                            format_func=lambda n: f"{backbones.get(n).title} ({NOTE[availability[n]]})")
    query = st.text_input("Search timm's pretrained models", key="timm_query", placeholder="e.g. convnext, vit_tiny",
                          help="Part of a model name; * and ? work as wildcards.")
    if not query.strip():
        st.info("Type part of a name (convnext, efficientnetv2, regnet, vit_tiny, swin...) to see matching models.")
        return default
    with st.spinner("Searching timm's catalogue..."):
        found = _search(query.strip())
    if not found.rows:
        st.warning(f"No pretrained timm model matches {plain(query)!s}: try a shorter part of the name.")
        return default
    with st.container(key="timm_matches"):
        st.table(plain_rows([{"model": r["name"].removeprefix("timm:"), "params": f"{r['params'] / 1e6:.1f}M",
                              "weights": r["weights"]} for r in found.rows]))
    if found.total > len(found.rows):
        st.caption(f"{len(found.rows)} of {found.total} matches shown (cached ones first): type more of the name.")
    by_name = {r["name"]: r for r in found.rows}
    return st.selectbox("timm model", list(by_name), key="timm_model",
                        format_func=lambda n: f"{n.removeprefix('timm:')} · {by_name[n]['params'] / 1e6:.1f}M params · "
                                              f"{NOTE[by_name[n]['weights']]}")
