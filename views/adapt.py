"""Domain adaptation: adapt a finished run to a new domain whose labels it never sees."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from core import paths
from core.lessons import adapt
from core.runs import tasks
from core.train import data
from ui import charts
from ui.common import label, plain, store, task_progress

TASK_KEY = "adapt_task"
SHIFTED = "digits_shifted"
FOLDER, UPLOAD = "a folder of unlabelled images", "upload a ZIP of unlabelled images"
METHOD_TITLES = {"adabn": "AdaBN: recompute BatchNorm statistics", "dann": "DANN: domain-adversarial training"}

st.title("Domain adaptation")
st.caption(
    "A model trained on one domain meets images that look different and come without labels. **AdaBN** keeps every "
    "weight and recomputes each BatchNorm layer's statistics on the new images (Li et al. 2016). **DANN** trains on "
    "with a domain classifier behind a gradient-reversal layer, so the features stop telling the domains apart "
    "while the labelled source keeps them useful (Ganin & Lempitsky 2015). The built-in target `digits_shifted` is "
    "the digits with lower contrast, a grey background and noise; its labels only score the result."
)

runs = store().runs()
finished = runs[runs["status"] == "finished"] if not runs.empty else runs
with_ckpt = [r for r in finished.to_dict("records") if (paths.run_dir(r["id"]) / "checkpoint.pt").exists()]
if not with_ckpt:
    st.info("Adaptation starts from a finished run: train one on the Experiment page first "
            "(EfficientNet-Lite0 on digits, for instance).")
    st.stop()

by_id = {r["id"]: r for r in with_ckpt[::-1]}
left, right = st.columns([5, 6], gap="large")
with left:
    run_id = st.selectbox("Run to adapt (a finished run)", list(by_id), key="adapt_run",
                          format_func=lambda i: f"{label(by_id[i])} — test {by_id[i]['test_accuracy']:.3f}"
                          if by_id[i]["test_accuracy"] is not None else label(by_id[i]))
    choices = [SHIFTED] + [n for n in data.REGISTRY if n != SHIFTED] + [FOLDER, UPLOAD]
    choice = st.selectbox("Target domain", choices, key="adapt_target",
                          format_func=lambda n: data.REGISTRY[n].title if n in data.REGISTRY else f"Your images: {n}")
    target = choice
    if choice == FOLDER:
        folder = st.text_input("Folder of images (any layout, no labels needed)", key="adapt_folder",
                               placeholder="/home/me/pictures/new_domain")
        target = f"{data.FOLDER_PREFIX}{folder.strip()}" if folder.strip() else None
    elif choice == UPLOAD:
        up = st.file_uploader("ZIP of images", type=["zip"], key="adapt_zip")
        target = f"{data.FOLDER_PREFIX}{paths.save_upload('targets', up.name, up.getvalue())}" if up else None
    elif choice in data.REGISTRY:
        st.caption(data.REGISTRY[choice].description)
    method = st.radio("Method", list(adapt.METHODS), key="adapt_method", format_func=METHOD_TITLES.get)
    c1, c2 = st.columns(2)
    steps = c1.number_input("DANN steps", 10, 5000, adapt.DANN_STEPS, step=10, key="adapt_steps",
                            disabled=method != "dann")
    lr = c2.number_input("DANN learning rate", 1e-6, 1e-1, 1e-4, format="%.5f", key="adapt_lr",
                         disabled=method != "dann")
    task_id = st.session_state.get(TASK_KEY)
    running = bool(task_id) and tasks.get(task_id).state == "running"
    problem = None
    if target is None:
        problem = "Give the folder or upload the ZIP of target images first."
    elif target.startswith(data.FOLDER_PREFIX) and not target.removeprefix(data.FOLDER_PREFIX).strip():
        problem = "Give the folder of target images."
    if problem:
        st.warning(problem)
    if st.button("Adapt", type="primary", key="adapt_go", disabled=running or problem is not None, width="stretch"):
        args = ["adapt", "--run", run_id, "--target", target, "--method", method, "--json"]
        if method == "dann":
            args += ["--steps", str(int(steps)), "--lr", str(float(lr))]
        st.session_state[TASK_KEY] = tasks.start(args).id
        st.rerun()



def _pct(v) -> str:
    return "—" if v is None else f"{v:.1%}"


with right:
    task_progress(TASK_KEY, running, "Adapting in the background…", "Adaptation failed:")
    results = adapt.saved_results(run_id)
    if not results:
        st.info("No adaptation of this run yet: choose a target and a method, then press **Adapt**.")
    else:
        def _title(i: int) -> str:
            r = results[i]
            when = datetime.strptime(r["saved"].split("/")[-1][:15], "%Y%m%d-%H%M%S").strftime("%H:%M:%S") if r.get("saved") else ""
            target_name = r["target"].removeprefix(data.FOLDER_PREFIX).split("/")[-1]
            return f"{r['method'].upper()} → {target_name} ({when})"

        pick = st.selectbox("Adaptation", range(len(results)), key=f"adapt_result_{run_id}", format_func=_title)
        r = results[pick]
        m1, m2, m3 = st.columns(3)
        m1.metric("Source accuracy", _pct(r["source_accuracy"]))
        m2.metric("Target before", _pct(r["target_before"]))
        delta = (None if r["target_after"] is None or r["target_before"] is None
                 else f"{100 * (r['target_after'] - r['target_before']):+.1f} points")
        m3.metric("Target after", _pct(r["target_after"]), delta)
        if r["target_before"] is None:
            st.caption(f"The target has no labels here ({plain(r.get('note') or 'unlabelled images')}): "
                       f"{r['changed_predictions']} of {sum(r['predictions_before'].values())} predictions changed.")
        elif r.get("note"):
            st.caption(plain(r["note"]))
        st.plotly_chart(charts.adapt_embedding(r["embedding"]), width="stretch", key="adapt_embedding",
                        config={"displayModeBar": False})
        st.caption(f"Distance between the source and target feature centroids, in units of the spread within each domain: "
                   f"{r['gap_before']:.2f} before, {r['gap_after']:.2f} after.")
        if r["target_before"] is None:
            counts = pd.DataFrame({"before": r["predictions_before"], "after": r["predictions_after"]})
            counts.index.name = "predicted class"
            st.bar_chart(counts, stack=False, height=240)
        if r.get("curve"):
            curve = pd.DataFrame(r["curve"]).set_index("step")[["label_loss", "domain_loss"]]
            st.caption("DANN training: the label loss on the source falls while the domain loss climbs toward "
                       "ln 2 ≈ 0.69, the loss of a domain classifier that can't tell source from target.")
            st.line_chart(curve, height=220)
