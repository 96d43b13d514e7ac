"""Compare: transfer against scratch (and any other runs) side by side."""

from __future__ import annotations

import json

import streamlit as st

from core import charts
from ui.common import config_of, label, latest_group, pick_runs, store

st.title("Compare")
st.caption("Runs side by side: how accurate, how fast, with how many trainable parameters.")
s = store()
runs = s.runs()
if runs.empty:
    st.info("No runs yet: launch one on the Experiment page.")
    st.stop()
done = runs[runs["status"] != "queued"]
selected = pick_runs(done, "compare_pick", latest_group(done))
if not selected:
    st.warning("Pick at least one run to compare.")
    st.stop()
df = runs[runs["id"].isin(selected)].copy()
epochs = s.metrics(selected)

c1, c2 = st.columns(2)
c1.plotly_chart(charts.epoch_curves(epochs, df, "val_accuracy"), width="stretch", key="cmp_curves",
                config={"displayModeBar": False})
c2.plotly_chart(charts.test_accuracy_bars(df), width="stretch", key="cmp_bars", config={"displayModeBar": False})
st.plotly_chart(charts.accuracy_vs_time(epochs, df), width="stretch", key="cmp_time", config={"displayModeBar": False})

rows = []
for _, r in df.iterrows():
    full = s.run(r["id"])
    cfg = config_of(full)
    result = json.loads(full["result"]) if full["result"] else {}
    rows.append({
        "run": label(full), "strategy": cfg["strategy"], "backbone": cfg["backbone"], "dataset": cfg["dataset"],
        "labels/class": cfg["labels_per_class"] or "all", "trainable params": f"{result.get('trainable_params', 0):,}",
        "epochs": f"{full['epochs_done']}/{cfg['epochs']}", "time (s)": f"{result.get('seconds', 0):.1f}" if result else "-",
        "best val": f"{full['best_val_accuracy']:.4f}" if full["best_val_accuracy"] is not None else "-",
        "test accuracy": f"{full['test_accuracy']:.4f}" if full["test_accuracy"] is not None else "-",
        "status": full["status"],
    })
with st.container(key="compare_table"):
    st.table(rows)

st.subheader("Time to reach an accuracy")
threshold = st.slider("Validation accuracy to reach", 0.5, 1.0, 0.9, 0.01, key="cmp_threshold")
reach = charts.time_to_accuracy(epochs, threshold)
if reach.empty:
    st.caption("No epochs finished yet.")
else:
    names = {r["id"]: label(r) for r in df.to_dict("records")}
    st.table([{"run": names.get(r["run_id"], r["run_id"]),
               "epochs": "never" if r["epoch"] != r["epoch"] or r["epoch"] is None else int(r["epoch"]),
               "seconds": "-" if r["seconds"] != r["seconds"] or r["seconds"] is None else f"{r['seconds']:.1f}"}
              for r in reach.to_dict("records")])
