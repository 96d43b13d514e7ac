"""Inspect: inside one trained run. How fine-tuning reshaped the feature
space, what the first layer's filters and each stage's feature maps look
like, and the model exported for use elsewhere."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.errors import TLabError
from core.insight import bundle, embeddings, explain, export, predict
from core.service import launching, looking
from core.train import strategies
from ui import charts, seeing
from ui.common import config_of, finished_output, label, plain, store, task_progress, task_running

st.title("Inspect")
st.caption("Inside one trained run: its feature space before and after training, what its layers learned, "
           "and the model as a file to take elsewhere.")
s = store()
finished = seeing.finished_runs(s)
by_id = {r["id"]: r for r in finished.iloc[::-1].to_dict("records")}
run_id = st.selectbox("Run", list(by_id), key="inspect_run", format_func=lambda i: label(by_id[i]))
row = s.run(run_id)
try:
    loaded = seeing.run_model(run_id)
except TLabError as e:
    st.error(plain(e))
    st.stop()
cfg = config_of(row)
pretrained = strategies.get(cfg["strategy"]).pretrained
start_name = "pretrained start" if pretrained else "random start"


@st.cache_data(show_spinner="Extracting features and projecting…", max_entries=16)
def _embedding(run_id: str, mtime: float, method: str, max_points: int):
    return looking.before_after(seeing.run_model(run_id), "test", method, max_points)


@st.cache_resource(show_spinner="Rebuilding the starting weights…", max_entries=4)
def _start_model(run_id: str, mtime: float):
    m = seeing.run_model(run_id)
    return embeddings.initial_model(m.config, m.num_classes)


def _mtime() -> float:
    ckpt = loaded.checkpoint
    return ckpt.stat().st_mtime if ckpt and ckpt.exists() else 0.0


space, layers, maps, files = st.tabs(["Feature space", "First-layer filters", "Feature maps", "Export"])

with space:
    st.caption(f"Test images through {loaded.spec.title}'s penultimate layer (what the classifier sees), projected "
               "to 2-D and coloured by class: at the start of training and after it.")
    c1, c2 = st.columns(2)
    method = c1.segmented_control("Projection", ["pca", "tsne"], default="pca", key="inspect_method",
                                  format_func={"pca": "PCA", "tsne": "t-SNE"}.get,
                                  help="PCA: the two directions of largest variance. t-SNE: keeps neighbourhoods, "
                                       "not distances between clusters.") or "pca"
    max_points = c2.number_input("At most this many test images", 100, 5000, 1000, step=100, key="inspect_points")
    try:
        emb = _embedding(run_id, _mtime(), method, int(max_points))
    except TLabError as e:
        st.error(plain(e))
    else:
        c1, c2 = st.columns(2)
        for col, stage, title in ((c1, "before", f"Before training ({start_name})"), (c2, "after", "After training")):
            if emb.stages[stage] is None:
                col.warning(f"The starting weights can't be rebuilt: {plain(emb.before_error)}")
                continue
            xy, sep = emb.stages[stage]
            col.plotly_chart(charts.embedding_scatter(xy, emb.y, loaded.class_names, title,
                                                      f"class separation {sep:.1%} (nearest class centre)"),
                             width="stretch", key=f"inspect_emb_{stage}", config=seeing.NO_BAR)
        if emb.stages["before"] is not None:
            with st.container(key="inspect_separation"):
                st.write(f"Class separation (leave-one-out nearest class centre on the features): "
                         f"**{emb.stages['before'][1]:.1%}** before, **{emb.stages['after'][1]:.1%}** after training.")

with layers:
    st.caption("The first convolution's filters, each stretched to its own range. Pretrained early layers hold "
               "generic edge, colour and texture detectors; from a random start they begin as noise.")
    pictures = []
    try:
        conv_name, conv = explain.first_conv(loaded.model)
    except TLabError as e:
        st.info(plain(e))
        conv_name = None
    if conv_name:
        try:
            pictures.append((start_name, explain.first_conv_filters(_start_model(run_id, _mtime()))[1]))
        except TLabError as e:  # e.g. the pretrained weights can't be had here any more
            st.warning(f"The starting weights can't be rebuilt: {plain(e)}")
        pictures.append(("after training", explain.first_conv_filters(loaded.model)[1]))
        if conv.out_channels > explain.MAX_FILTERS:
            st.caption(f"The first {explain.MAX_FILTERS} of {conv.out_channels} filters.")
    twins = [r for r in s.runs(row["group_id"]).to_dict("records")
             if r["id"] != run_id and r["status"] == "finished" and r["strategy"] == strategies.baseline().name
             and r["backbone"] == cfg["backbone"]] if conv_name and pretrained else []
    if twins:
        try:
            pictures.append(("scratch twin, after training", explain.first_conv_filters(seeing.run_model(twins[0]["id"]).model)[1]))
        except TLabError as e:
            st.warning(plain(e))
    if pictures:
        with st.container(key="inspect_filters"):
            cols = st.columns(len(pictures))
            for col, (title, pic) in zip(cols, pictures):
                col.image(pic, caption=f"{title} · {conv_name}", width="stretch")
        if conv_name and not twins and pretrained:
            st.caption("This run's group has no finished scratch twin to compare with.")

with maps:
    st.caption("What each stage makes of one image, stem to last stage: the most active channels of each. Early "
               "stages respond to edges and colours at full resolution; later ones to parts, coarser.")
    source = st.segmented_control("Image", ["A test image", "Upload"], default="A test image", key="inspect_source") or "A test image"
    x = None
    if source == "Upload":
        up = st.file_uploader("Image (PNG, JPEG, WebP, BMP)", type=["png", "jpg", "jpeg", "webp", "bmp"], key="inspect_file")
        if up is not None:
            try:
                x = predict.load_image(up.getvalue(), loaded.image_size)
            except TLabError as e:
                st.error(plain(e))
    else:
        try:
            ev = seeing.run_evaluation(run_id)
            i = st.number_input(f"Test image number (0 to {len(ev) - 1})", 0, max(0, len(ev) - 1), 0, key="inspect_index")
            x = ev.x[int(i) : int(i) + 1]
            st.caption(f"true class: {plain(ev.class_names[ev.y[int(i)]])} · predicted: {plain(ev.class_names[ev.predicted[int(i)]])}")
        except TLabError as e:
            st.error(plain(e))
    if x is not None:
        try:
            stages = explain.feature_maps(loaded.model, loaded.spec, x, per_stage=8)
        except TLabError as e:
            st.info(plain(e))
        else:
            with st.container(key="inspect_maps"):
                st.image(explain.upscale(explain.to_rgb(x), 96), caption="input, as the model sees it", width=96)
                for stage in stages:
                    where = "" if stage.module == stage.group else f" ({stage.module})"
                    if stage.size == (1, 1):
                        st.caption(f"{stage.group}{where}: {stage.channels} channels at 1×1: no spatial map is left at "
                                   f"{loaded.image_size} px (train at a larger image size to see one)")
                        continue
                    st.image(explain.maps_strip(stage.maps),
                             caption=f"{stage.group}{where}: {stage.channels} channels at {stage.size[0]}×{stage.size[1]}, "
                                     f"the {len(stage.indices)} most active")

with files:
    st.caption("TorchScript and ONNX take RGB images scaled to [0, 1], "
               f"{loaded.image_size}×{loaded.image_size}, any batch size, and return logits; the normalisation is "
               "inside them. Every download is a bundle: the model file, its weights as safetensors, signature.json (classes, "
               "input, preprocessing) and a README model card with five-line loading code.")

    @st.cache_data(show_spinner=False, max_entries=8)
    def _export_bytes(run_id: str, mtime: float, fmt: str) -> bytes:
        return bundle.build(seeing.run_model(run_id), fmt, {"run_id": run_id})

    c1, c2, c3 = st.columns(3)
    c1.download_button("Checkpoint bundle (.zip)", lambda: _export_bytes(run_id, _mtime(), "pt"),
                       file_name=bundle.file_name(run_id, "pt"), mime="application/zip", key="export_pt",
                       on_click="ignore", width="stretch")
    for col, fmt, title in ((c2, "torchscript", "TorchScript"), (c3, "onnx", "ONNX")):
        with col:
            task_key, built = f"export_task_{fmt}", st.session_state.setdefault(f"export_{fmt}_check", {})
            out = finished_output(task_key, any_exit=True)  # a check that fails still hands over its file
            if out is not None:
                check = export.Verification(out["images"], out["max_abs_diff"], out["top1_agreement"],
                                            out["float32_error"]).describe()
                built[st.session_state.pop(f"export_for_{fmt}", run_id)] = (out["out"], check)
            running = task_running(task_key)
            done = built.get(run_id)
            if done is None or not Path(done[0]).exists():
                if st.button(f"Build {title}", key=f"export_build_{fmt}", width="stretch", disabled=running,
                             help="Export in the background, then check it against the PyTorch model on the test images."):
                    try:
                        st.session_state[task_key] = launching.start_export(run_id, fmt).id
                        st.session_state[f"export_for_{fmt}"] = run_id
                    except TLabError as e:
                        st.error(plain(e))
                    else:
                        st.rerun()  # a full run starts the progress fragment's timer
                task_progress(task_key, running, f"Exporting to {title} and checking it…", "Export failed:")
            else:
                st.download_button(f"{title} bundle (.zip)", lambda p=done[0]: Path(p).read_bytes(),
                                   file_name=bundle.file_name(run_id, fmt), mime="application/zip", key=f"export_{fmt}",
                                   on_click="ignore", type="primary", width="stretch")
                st.caption(done[1])
    st.caption("From a terminal: `python -m core export --run RUN_ID --format pt|torchscript|onnx --verify`.")
