"""The Experiment page's strategy advisor: measure the chosen data through the
pretrained backbones, show where it sits in the two-by-two table, fill the
form with the recommendation, or race it against its neighbours."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import TLabError
from core.runs import experiments
from core.service import launching
from core.train import backbones, strategies
from core.train.config import RunConfig
from ui import charts
from ui.common import finished_output, plain, store, task_progress, task_running

RESULTS_KEY = "advisor_results"
TASK_KEY, TASK_FOR = "advisor_task", "advisor_for"


def _fill_form(strategy: str, backbone: str) -> None:
    """A button callback: runs before the page, so it may set the form's widgets."""
    st.session_state["backbone"] = backbone
    st.session_state["strategy"] = strategy


def advisor_section(cfg: RunConfig, dataset_ready: bool) -> None:
    """The advisor for the form's dataset, labels per class and image size."""
    with st.expander("Strategy advisor: measure your data, then choose", expanded=True):
        st.caption(
            "How much labelled data per class, and how far your images sit from what the backbone saw in "
            "pretraining (its BatchNorm statistics against your images' activations), plus how well frozen "
            "features separate your classes (kNN probe, LogME) for each pretrained backbone available. "
            "Forward passes only: a few seconds.")
        if not dataset_ready:
            st.info("Choose your images first.")
            return
        key = (cfg.dataset, cfg.labels_per_class, cfg.image_size, cfg.seed)
        results = st.session_state.setdefault(RESULTS_KEY, {})
        running = task_running(TASK_KEY)
        if st.button("Measure and recommend", key="advise", width="stretch", disabled=running):
            try:
                task = launching.start_advisor(cfg.dataset, cfg.labels_per_class, cfg.image_size, cfg.seed)
            except TLabError as e:
                st.error(plain(str(e)))
            else:
                st.session_state[TASK_KEY], st.session_state[TASK_FOR] = task.id, key
                st.rerun()  # a full run draws the button disabled and starts the progress fragment's timer
        task_progress(TASK_KEY, running, "Measuring through the pretrained backbones in the background…",
                      "The advisor failed:")
        found = finished_output(TASK_KEY)
        if found is not None:
            results[st.session_state.pop(TASK_FOR, key)] = found
        advice = results.get(key)
        if advice is None or running:
            return
        shift = advice["domain_shift"]
        st.markdown(f"**Recommended: {strategies.get(advice['strategy']).title}** on "
                    f"**{backbones.get(advice['backbone']).title}**: {advice['reason']}")
        m1, m2 = st.columns(2)
        m1.metric("Labelled images per class", advice["labels_per_class"])
        m2.metric("Domain shift", "n/a" if shift is None else f"{shift:.2f}",
                  help=f"0 = your images' activations match the pretraining statistics; "
                       f"above {advice['thresholds']['shift']} counts as different data.")
        st.markdown(f"**Quadrant:** {advice['quadrant']}")
        st.plotly_chart(charts.advisor_quadrants(advice), width="stretch", key="advisor_quadrants",
                        config={"displayModeBar": False})
        ranked = pd.DataFrame(advice["backbones"])
        ranked.insert(0, "rank", range(1, len(ranked) + 1))
        st.dataframe(ranked[["rank", "title", "logme", "knn_accuracy", "domain_shift", "note"]], hide_index=True,
                     width="stretch", key="advisor_backbones",
                     column_config={"title": "backbone", "logme": st.column_config.NumberColumn("LogME", format="%.3f"),
                                    "knn_accuracy": st.column_config.NumberColumn("kNN accuracy", format="%.2f"),
                                    "domain_shift": st.column_config.NumberColumn("domain shift", format="%.2f")})
        st.caption(f"Probes on {advice['images_per_class_probed']} images per class, measured in "
                   f"{advice['seconds']:.1f}s. Backbones whose weights would need a download are not measured.")
        c1, c2 = st.columns(2)
        c1.button("Use this recommendation", key="advisor_fill", width="stretch",
                  on_click=_fill_form, args=(advice["strategy"], advice["backbone"]),
                  help="Sets the backbone and strategy above.")
        race = advice["race"]
        titles = ", ".join(strategies.get(s).title for s in race)
        if c2.button("Race it against its neighbours", key="advisor_race", type="primary", width="stretch",
                     help=f"Launches a strategy race with the budget above: {titles}."):
            try:
                cfgs = experiments.race_configs(cfg.replace(backbone=advice["backbone"], weights=None), race)
                _, ids = launching.launch(launching.prepare(cfgs, experiments.RACE), store())
            except TLabError as e:
                st.error(plain(str(e)))
            else:
                st.session_state["live_runs"] = ids
                st.switch_page("views/live.py")
