"""Page parts that look inside trained runs: Grad-CAM on Predict, mistakes
and per-class metrics on Compare, the LR finder on Experiment (a background task). The Inspect
page (views/inspect.py) uses the cached loaders here too. All computing is
in core (explain, evaluate, embeddings, lr_finder, export)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import paths
from core.errors import TLabError
from core.insight import evaluate, explain, predict
from core.train.checkpoint import BEST_NAME, CALIBRATION_NAME, CHECKPOINT_NAME, LoadedModel, load_run_model
from ui import charts
from ui.common import plain

NO_BAR = {"displayModeBar": False}


def finished_runs(store):
    """The store's finished runs (a DataFrame); with none, a note and the page stops."""
    runs = store.runs()
    finished = runs[runs["status"] == "finished"] if not runs.empty else runs
    if finished.empty:
        st.info("No finished runs yet: train one on the Experiment page.")
        st.stop()
    return finished


def _checkpoint(run_id: str):
    """A run's folder and the version of what loading it reads (last and best weights, calibration)."""
    run_dir = paths.run_dir(run_id)
    return run_dir, tuple(f.stat().st_mtime if f.exists() else 0.0
                          for f in (run_dir / CHECKPOINT_NAME, run_dir / BEST_NAME, run_dir / CALIBRATION_NAME))


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _model(run_dir: str, mtime: tuple) -> LoadedModel:
    return load_run_model(run_dir)


def run_model(run_id: str) -> LoadedModel:
    """A run's trained model, cached per checkpoint version. Raises TLabError."""
    ckpt, mtime = _checkpoint(run_id)
    return _model(str(ckpt), mtime)


# A resource, not data: the test images (up to tens of MB for a big test split)
# are shared read-only, never pickled and copied per session.
@st.cache_resource(show_spinner="Classifying the test images…", max_entries=8)
def _evaluation(run_id: str, mtime: tuple) -> evaluate.Evaluation:
    return evaluate.evaluate_run(run_model(run_id))


def run_evaluation(run_id: str) -> evaluate.Evaluation:
    """The run on its own test split, cached per checkpoint version."""
    return _evaluation(run_id, _checkpoint(run_id)[1])


def thumbnails(ev: evaluate.Evaluation, idx, caption, width: int = 72, per_row: int = 10) -> None:
    """Test images in rows, each with a caption from caption(i)."""
    idx = list(idx)
    for start in range(0, len(idx), per_row):
        part = idx[start : start + per_row]
        st.image([explain.upscale(explain.to_rgb(ev.x[i]), 96) for i in part], caption=[plain(caption(i)) for i in part], width=width)


# --- Predict: Grad-CAM per model -------------------------------------------------------------


def gradcam_class_picker(models: list[LoadedModel]) -> str | None:
    """'each model's top class' (None) or one class name, from the union of the models' classes."""
    names = list(dict.fromkeys(c for m in models for c in m.class_names))
    choice = st.selectbox("Grad-CAM for", ["__top__", *names], key="gradcam_class",
                          format_func=lambda c: "each model's predicted class" if c == "__top__" else f"class {c}",
                          help="Where in the image each model finds evidence for this class (Grad-CAM on its last "
                               "spatial stage; a transformer's patch tokens on their grid).")
    return None if choice == "__top__" else choice


def gradcam_method_picker() -> str:
    """'gradcam' or 'gradcam++' (pytorch-grad-cam's two gradient methods)."""
    return st.radio("Heat-map method", list(explain.CAM_METHODS), key="gradcam_method", horizontal=True,
                    format_func=lambda m: explain.CAM_METHODS[m],
                    help="Grad-CAM weighs each channel by its mean gradient; Grad-CAM++ by higher powers of the "
                         "gradients, which separates several instances of a class better.")


def gradcam_panel(loaded: LoadedModel, content: bytes, class_name: str | None, key: str,
                  method: str = "gradcam") -> None:
    """The Grad-CAM overlay of one model for one uploaded image, or why there is none."""
    if class_name is not None and class_name not in loaded.class_names:
        st.info(f"This model has no class “{plain(class_name)}”: pick another class for its Grad-CAM.")
        return
    try:
        x = predict.load_image(content, loaded.image_size)
        cam = explain.gradcam(loaded.model, loaded.spec, x,
                              None if class_name is None else loaded.class_names.index(class_name), method=method)
    except TLabError as e:
        st.info(plain(e))
        return
    name = loaded.class_names[cam.class_index]
    with st.container(key=key):
        st.image(explain.overlay(x, cam.heatmap, size=224), width=224,
                 caption=f"{explain.CAM_METHODS[cam.method]} for “{plain(name)}” (p={cam.probability:.2f}), from {cam.layer} "
                         f"({cam.feature_size[0]}×{cam.feature_size[1]} map)")


# --- Compare: per-class metrics, confusion matrix, the mistakes ----------------------------------


def mistakes_section(runs: list[dict], label) -> None:
    """Per-class precision/recall/F1 for every finished run picked, then the
    confusion matrix of one of them with the images behind a cell and its
    top losses. `runs`: store rows; `label(row)` names a run."""
    finished = [r for r in runs if r["status"] == "finished"]
    st.subheader("Per class: precision, recall, F1")
    if not finished:
        st.caption("Appears when a picked run has finished.")
        return
    evaluations, per_class = {}, []
    for r in finished:
        try:
            ev = run_evaluation(r["id"])
        except TLabError as e:
            st.warning(f"{plain(label(r))}: {plain(e)}")
            continue
        evaluations[r["id"]] = ev
        per_class.append((label(r), evaluate.per_class_metrics(ev.confusion(), ev.class_names)))
    if not evaluations:
        return
    metric = st.segmented_control("Measure", ["f1", "precision", "recall"], default="f1", key="cmp_class_metric",
                                  format_func={"f1": "F1", "precision": "Precision", "recall": "Recall"}.get) or "f1"
    st.plotly_chart(charts.per_class_metric_bars(per_class, metric), width="stretch", key="cmp_per_class", config=NO_BAR)
    with st.expander("Per-class table", expanded=False), st.container(key="cmp_per_class_table"):
        st.table([{"run": plain(run), "class": plain(m["class"]), "precision": f"{m['precision']:.3f}", "recall": f"{m['recall']:.3f}",
                   "F1": f"{m['f1']:.3f}", "test images": m["support"]} for run, rows in per_class for m in rows])

    st.subheader("Confusion matrix and the mistakes behind it")
    by_id = {r["id"]: r for r in finished if r["id"] in evaluations}
    c1, c2 = st.columns([3, 1])
    run_id = c1.selectbox("Run", list(by_id), key="cmp_cm_run", format_func=lambda i: label(by_id[i]))
    normalised = c2.toggle("Normalise rows", False, key="cmp_cm_norm", help="Each row as shares of its true class.")
    ev = evaluations[run_id]
    cm = ev.confusion()
    st.plotly_chart(charts.confusion_heatmap(cm, ev.class_names, normalised,
                                             title=f"Confusion matrix · {len(ev)} test images · accuracy {ev.accuracy:.1%}"),
                    width="stretch", key="cmp_cm", config=NO_BAR)
    k = len(ev.class_names)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    # the biggest confusion first; with no mistakes at all, the first class's right answers
    worst = np.unravel_index(int(np.argmax(off)), off.shape) if off.max() > 0 else (0, 0)
    c1, c2 = st.columns(2)
    classes = list(range(k))
    true_c = c1.selectbox("True class", classes, index=int(worst[0]), key=f"cmp_cell_true_{run_id}",
                          format_func=lambda i: ev.class_names[i])
    pred_c = c2.selectbox("Predicted as", classes, index=int(worst[1]), key=f"cmp_cell_pred_{run_id}",
                          format_func=lambda i: ev.class_names[i])
    idx = ev.cell(true_c, pred_c)
    with st.container(key="cmp_cell_images"):
        what = "right" if true_c == pred_c else "wrong"
        st.write(f"{len(idx)} test image(s) of class “{plain(ev.class_names[true_c])}” predicted as "
                 f"“{plain(ev.class_names[pred_c])}” ({what}), the most confident first")
        if len(idx):
            thumbnails(ev, idx[:30], lambda i: f"p={ev.probs[i, pred_c]:.2f}")
    st.markdown("**Top losses**: the images the model got most confidently wrong")
    top = ev.top_losses(12)
    with st.container(key="cmp_top_losses"):
        if len(top) == 0:
            st.caption("None: every test image is classified right.")
        else:
            thumbnails(ev, top, lambda i: f"{ev.class_names[ev.y[i]]} → {ev.class_names[ev.predicted[i]]} "
                                          f"({ev.probs[i, ev.predicted[i]]:.2f})", width=84, per_row=6)


# --- Experiment: the LR finder --------------------------------------------------------------------


LR_TASK, LR_SETUP = "lr_finder_task", "lr_finder_setup"


def _use_lr(key: str, value: float) -> None:
    st.session_state[key] = value  # a callback: runs before the widget is drawn again


def lr_finder_section(cfg, lr_key: str, lr_bounds: tuple[float, float], problem: str | None) -> None:
    """'Find a learning rate' before Launch: runs the range test for the form's
    settings in a background task (never in this process), shows its progress
    until it ends, then draws loss vs LR and a button that writes the
    suggestion into the form's learning-rate field."""
    from core.insight.lr_finder import STEPS, LRFinderResult
    from core.service import launching
    from ui.common import finished_output, task_progress, task_running

    running = task_running(LR_TASK)
    with st.expander("Find a learning rate (LR range test)",
                     expanded="lr_finder" in st.session_state or bool(st.session_state.get(LR_TASK))):
        st.caption("A few hundred steps on a throw-away copy of this model while the LR grows exponentially; the "
                   "suggestion is where the smoothed loss falls fastest. Nothing is saved, the run is not started.")
        c1, c2 = st.columns([1, 2])
        steps = c1.number_input("Steps", 10, 1000, STEPS, step=10, key="lr_finder_steps")
        setup = cfg.replace(lr=None, name="").to_json()
        if c2.button("Run the LR finder", key="lr_finder_run", disabled=problem is not None or running,
                     help=problem or "Uses the settings above (backbone, strategy, data, image and batch size)."):
            try:
                st.session_state[LR_TASK] = launching.start_lr_finder(cfg, int(steps)).id
                st.session_state[LR_SETUP] = setup
            except TLabError as e:
                st.error(plain(e))
            else:
                st.rerun()  # a full run draws the button disabled and starts the progress fragment's timer
        task_progress(LR_TASK, running, "Trying learning rates in the background…", "The LR finder failed:")
        found = finished_output(LR_TASK)
        if found is not None:
            st.session_state["lr_finder"] = (st.session_state.pop(LR_SETUP, None), found)
        if "lr_finder" not in st.session_state or running:
            return
        was_for, found = st.session_state["lr_finder"]
        result = LRFinderResult.from_dict(found)
        current = st.session_state.get(lr_key)
        st.plotly_chart(charts.lr_finder_curve(result.lrs, result.losses, result.smoothed, result.suggestion, current),
                        width="stretch", key="lr_finder_chart", config=NO_BAR)
        if was_for != setup:
            st.warning("The settings changed since this curve was measured: run the LR finder again.")
            return
        if result.suggestion is None:
            st.warning(f"No suggestion: {plain(result.reason)}.")
            return
        value = float(min(max(result.suggestion, lr_bounds[0]), lr_bounds[1]))
        with st.container(key="lr_finder_result"):
            st.write(f"Suggested learning rate: **{value:.2e}** ({result.reason}).")
            st.button(f"Use this LR ({value:.2e})", key="lr_finder_use", on_click=_use_lr, args=(lr_key, value),
                      type="secondary")
