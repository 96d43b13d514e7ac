"""Compare: transfer against scratch (and any other runs) side by side."""

from __future__ import annotations

import json

import streamlit as st

from core.errors import TLabError
from core.runs import experiments
from core.runs.schema import TERMINAL
from core.train import distill, strategies
from ui import charts, seeing
from ui.common import config_of, label, latest_group, pick_runs, plain, plain_rows, recipe_columns, store
from ui.sharing import download_pack, upload_pack

st.title("Compare")
st.caption("Runs side by side: how accurate, how fast, with how many trainable parameters.")
upload_pack("compare_pack_upload")
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
download_pack(selected, set(done[done["status"].isin(TERMINAL)]["id"]), "compare_pack_download")
epochs = s.metrics(selected)
kind = df["kind"].iloc[0] if df["group_id"].nunique() == 1 and df["kind"].nunique() == 1 else ""

if kind == experiments.SWEEP:
    st.subheader("Sample efficiency: test accuracy vs labels per class")
    st.caption("Every point trained for the same number of steps; mean and spread over seeds. Where the lines "
               "meet, pretrained features stop paying.")
    summary = experiments.summarise_sweep(df)
    st.plotly_chart(charts.labels_curve(summary), width="stretch", key="cmp_labels", config={"displayModeBar": False})
    with st.container(key="compare_sweep"):
        st.table(plain_rows([{"strategy": r["strategy"], "labels per class": r["labels_per_class"], "mean": f"{r['mean']:.4f}",
                   "std": f"{r['std']:.4f}", "n": r["n"]} for r in summary.to_dict("records")]))
    st.stop()

if kind == "tune":
    from core.service import launching, looking
    from core.train.config import RunConfig

    try:
        study, summary = looking.study_of_group(df["group_id"].iloc[0])
    except TLabError as e:
        st.warning(plain(e))
    else:
        st.subheader(f"Search '{summary['study']}': {summary['trials']} trials")
        st.caption(f"{summary['complete']} complete, {summary['pruned']} pruned, {summary['fail']} failed, "
                   f"{summary['running']} under way. The objective is the best validation accuracy; "
                   "the test split was never looked at while searching.")
        best = summary["best"]
        if best:
            with st.container(border=True, key="compare_best_trial"):
                st.markdown(f"**Best trial: {best['trial']}**, validation accuracy {best['best_val_accuracy']:.4f} "
                            f"(run {best['run_id']})")
                st.table(plain_rows([{"setting": k, "value": f"{v:.4g}" if isinstance(v, float) else str(v)}
                                     for k, v in best["params"].items()]))
                full = RunConfig.from_json(s.run(best["run_id"])["config"]).replace(labels_per_class=None, name="")
                full_epochs = st.number_input("Epochs for the full run", 1, 1000, full.epochs, key="best_trial_epochs")
                if st.button("Train this with its scratch twin", key="best_trial_launch"):
                    try:
                        cfgs, side = launching.with_scratch_twin(full.replace(epochs=int(full_epochs)))
                        _, ids = launching.launch(launching.prepare(cfgs, "", side), s)
                    except TLabError as e:
                        st.error(plain(e))
                    else:
                        st.session_state["live_runs"] = ids
                        st.switch_page("views/live.py")
        cols = st.columns(2)
        for i, which in enumerate(charts.STUDY_FIGURES):
            cols[i % 2].plotly_chart(charts.study_figure(study, which), width="stretch", key=f"cmp_study_{which}",
                                     config={"displayModeBar": False})

if kind == experiments.DISTILL:
    @st.cache_data(show_spinner="Measuring size and CPU latency…", max_entries=64)
    def _profile(run_id: str, test_accuracy: float | None) -> dict:
        return distill.profile(run_id, test_accuracy)

    kd_rows = [r for r in df.to_dict("records") if r["teacher"]]
    teacher_id = kd_rows[0]["teacher"] if kd_rows else None
    roles = []
    try:
        if teacher_id:
            t = s.run(teacher_id)
            roles.append(("teacher", t))
        for r in df.to_dict("records"):
            roles.append(("student_kd" if r["teacher"] else "student", s.run(r["id"])))
        rows = [{"role": role, "label": label(row), "strategy": config_of(row)["strategy"],
                 **_profile(row["id"], row["test_accuracy"])} for role, row in roles if row["status"] == "finished"]
    except TLabError as e:
        st.error(plain(e))
        rows = []
    st.subheader("Teacher vs student with KD vs student alone")
    st.plotly_chart(charts.distill_comparison(rows), width="stretch", key="cmp_distill", config={"displayModeBar": False})
    with st.container(key="compare_distill"):
        st.table(plain_rows([{"role": charts.ROLE_NAMES[r["role"]], "run": r["label"],
                   "test accuracy": f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-",
                   "parameters": f"{r['params']:,}", "size (MB)": f"{r['model_mb']:.2f}",
                   "CPU latency (ms/image)": f"{r['latency_ms']:.2f}"} for r in rows]))

c1, c2 = st.columns(2)
c1.plotly_chart(charts.epoch_curves(epochs, df, "val_accuracy"), width="stretch", key="cmp_curves",
                config={"displayModeBar": False})
c2.plotly_chart(charts.test_accuracy_bars(df), width="stretch", key="cmp_bars", config={"displayModeBar": False})
st.plotly_chart(charts.accuracy_vs_time(epochs, df), width="stretch", key="cmp_time", config={"displayModeBar": False})
if kind == experiments.RACE:
    st.plotly_chart(charts.accuracy_vs_params(df), width="stretch", key="cmp_params", config={"displayModeBar": False})
    plans = [(r["strategy"], strategies.group_rows(json.loads(s.run(r["id"])["plan"] or "[]"))) for r in df.to_dict("records")]
    st.plotly_chart(charts.layer_maps_side_by_side(plans), width="stretch", key="cmp_maps", config={"displayModeBar": False})

rows, calibrations = [], []
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
        **recipe_columns(result), "status": full["status"],
    })
    calibrations.append((label(full), result.get("reliability"), result.get("ece"), result.get("ece_calibrated")))
with st.container(key="compare_table"):
    st.table(plain_rows(rows))

st.subheader("Calibration")
st.caption("How far each model's confidence can be trusted on its test split: the expected calibration error (ECE) "
           "as trained, and after temperature scaling fitted on the validation split (what Predict shows).")
st.plotly_chart(charts.reliability_diagram(calibrations), width="stretch", key="cmp_reliability",
                config={"displayModeBar": False})

st.subheader("Time to reach an accuracy")
threshold = st.slider("Validation accuracy to reach", 0.5, 1.0, 0.9, 0.01, key="cmp_threshold")
reach = charts.time_to_accuracy(epochs, threshold)
if reach.empty:
    st.caption("No epochs finished yet.")
else:
    names = {r["id"]: label(r) for r in df.to_dict("records")}
    st.table(plain_rows([{"run": names.get(r["run_id"], r["run_id"]),
               "epochs": "never" if r["epoch"] != r["epoch"] or r["epoch"] is None else int(r["epoch"]),
               "seconds": "-" if r["seconds"] != r["seconds"] or r["seconds"] is None else f"{r['seconds']:.1f}"}
              for r in reach.to_dict("records")]))

seeing.mistakes_section([s.run(i) for i in selected], label)
