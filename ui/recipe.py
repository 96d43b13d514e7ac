"""The Experiment page's training recipe: augmentation (level and knobs, with
a preview grid of training images as the model will see them), early
stopping, which weights to keep, label smoothing and class imbalance."""

from __future__ import annotations

import streamlit as st

from core.errors import TLabError
from core.service import forms
from core.train.config import AUGMENT_LEVELS, AUTO_AUGMENTS, RunConfig
from core.train.data import LEVELS
from ui.common import plain

LEVEL_HELP = {"none": "the images as they are", "light": "crop, flip, mild colour jitter",
              "strong": "harder crops, stronger colour, TrivialAugment"}


def recipe_widgets(defaults: RunConfig) -> dict:
    """The recipe's widgets; returns RunConfig fields (None: the default)."""
    st.subheader("Training recipe")
    c1, c2, c3 = st.columns(3)
    level = c1.selectbox("Augmentation", AUGMENT_LEVELS, index=AUGMENT_LEVELS.index(defaults.augment), key="augment",
                         format_func=lambda v: f"{v}: {LEVEL_HELP[v]}",
                         help="Random changes to each training image, drawn per image on the training device.")
    patience = c2.number_input("Early-stopping patience (0 = off)", 0, 1000, 0, key="patience",
                               help="Stop after this many epochs without the validation figure improving.")
    monitor = c3.selectbox("Watch", ["val_loss", "val_accuracy"], key="monitor",
                           help="What 'best' and early stopping watch.")
    values: dict = {"augment": level, "patience": int(patience) or None, "monitor": monitor}
    with st.expander("Augmentation knobs, imbalance, label smoothing, weights used", expanded=False):
        base = LEVELS.get(level)
        k1, k2, k3 = st.columns(3)
        if base is not None:
            values["crop_scale"] = k1.slider("Crop: smallest area kept", 0.05, 1.0, base.crop_scale, key=f"crop_{level}")
            values["color_jitter"] = k2.slider("Colour jitter", 0.0, 1.0, base.color_jitter, key=f"jitter_{level}")
            values["auto_augment"] = k3.selectbox("Auto-augment", AUTO_AUGMENTS, index=AUTO_AUGMENTS.index(base.auto_augment),
                                                  key=f"auto_{level}")
            k1, k2, k3 = st.columns(3)
            values["flip"] = k1.checkbox("Horizontal flip", base.flip, key=f"flip_{level}")
            values["mixup"] = k2.slider("MixUp (probability per batch)", 0.0, 1.0, 0.0, key=f"mixup_{level}")
            values["cutmix"] = k3.slider("CutMix (probability per batch)", 0.0, 1.0, 0.0, key=f"cutmix_{level}")
        k1, k2, k3 = st.columns(3)
        values["label_smoothing"] = k1.slider("Label smoothing", 0.0, 0.5, defaults.label_smoothing, key="label_smoothing")
        values["class_weights"] = k2.selectbox("Class weights", ["none", "auto"], key="class_weights",
                                               help="auto: each class's loss weighted by N / (classes x its count).")
        values["sampler"] = k3.selectbox("Sampler", ["shuffle", "balanced"], key="sampler",
                                         help="balanced: every class equally likely in each batch.")
        k1, k2, _ = st.columns(3)
        values["use_weights"] = k1.selectbox("Score and serve with", ["best", "last"], key="use_weights",
                                             help="The best validation epoch's weights, or the last epoch's.")
        values["min_delta"] = k2.number_input("Min delta", 0.0, 1.0, 0.0, format="%.4f", key="min_delta",
                                              help="An improvement smaller than this does not reset patience.")
    return values


def augmentation_preview(cfg: RunConfig) -> None:
    """The same training images, as stored and as the model will see them; a click draws again."""
    if not cfg.augmenting:
        return
    st.session_state.setdefault("augment_draw", 0)
    with st.container(key="augment_preview"):
        c1, c2 = st.columns([4, 1])
        if c2.button("Re-draw", key="augment_redraw"):
            st.session_state["augment_draw"] += 1
        try:
            view = forms.preview_augmentation(cfg, st.session_state["augment_draw"])
        except TLabError as e:
            st.error(plain(e))
            return
        c1.caption(f"What the model sees ({plain(view.what)}), draw {st.session_state['augment_draw'] + 1}: "
                   "top row as stored, bottom row augmented.")
        st.image(view.originals, width=64)
        st.image(view.drawn, width=64)
