"""Predict: what each trained model says about your image."""

from __future__ import annotations

import streamlit as st

from core.errors import TLabError
from core.insight import predict
from core.train.checkpoint import LoadedModel
from ui import charts, seeing
from ui.common import label, latest_group, pick_runs, plain, plain_rows, store

st.title("Predict")
st.caption("Upload an image (or take a photo) and see each model's top-5 classes, and where in the image each "
           "model looked (Grad-CAM). Images are preprocessed exactly as in training: resized on the short side, "
           "centre-cropped, normalised.")
s = store()
finished = seeing.finished_runs(s)
selected = pick_runs(finished, "predict_runs", latest_group(finished))


source = st.segmented_control("Image from", ["Upload", "Camera"], default="Upload", key="predict_source")
with st.container(key="predict_upload"):
    if source == "Camera":
        image = st.camera_input("Take a photo", key="predict_camera")
    else:
        image = st.file_uploader("Image (PNG, JPEG, WebP, BMP)", type=["png", "jpg", "jpeg", "webp", "bmp"], key="predict_file")
if not selected:
    st.warning("Pick at least one finished run.")
    st.stop()
if image is None:
    st.stop()

content = image.getvalue()
try:
    preview = predict.load_image(content, 160)  # also proves the file is an image before any model sees it
except TLabError as e:
    st.error(plain(e))
    st.stop()
st.image(preview[0].permute(1, 2, 0).numpy(), caption="your image, centre-cropped as the models see it", width=160)
models: dict[str, LoadedModel | TLabError] = {}
for run_id in selected:
    try:
        models[run_id] = seeing.run_model(run_id)
    except TLabError as e:
        models[run_id] = e
cam_class = seeing.gradcam_class_picker([m for m in models.values() if isinstance(m, LoadedModel)])
cam_method = seeing.gradcam_method_picker()
c1, c2 = st.columns(2)
use_calibrated = c1.toggle("Calibrated probabilities", True, key="predict_calibrated",
                           help="Each run's logits divided by the temperature fitted on its validation split: "
                                "the same top class, probabilities you can take at their word.")
tta = c2.toggle("Test-time augmentation (flip)", False, key="predict_tta",
                help="Average the image's and its mirror image's probabilities.")
with st.container(key="predictions"):
    cols = st.columns(len(selected))
    for col, run_id in zip(cols, selected):
        row = s.run(run_id)
        with col:
            st.markdown(f"**{plain(label(row))}**")
            loaded = models[run_id]
            try:
                if isinstance(loaded, TLabError):
                    raise loaded
                top = predict.predict(loaded, content, k=5, calibrated=use_calibrated, tta=tta)
            except TLabError as e:
                st.error(plain(e))
                continue
            cal = use_calibrated and predict.calibrated(loaded)
            st.caption(f"epoch {loaded.epoch}'s weights ({loaded.which}) · "
                       + (f"calibrated probabilities (temperature {loaded.temperature:.2f})" if cal
                          else "uncalibrated probabilities" + (" (no temperature fitted)" if use_calibrated else ""))
                       + (" · flip TTA" if tta else ""))
            st.table(plain_rows([{"class": c, "probability": f"{p:.3f}"} for c, p in top]))
            st.plotly_chart(charts.topk_bars(top, title=""), width="stretch", key=f"pred_{run_id}",
                            config={"displayModeBar": False})
            seeing.gradcam_panel(loaded, content, cam_class, key=f"gradcam_{run_id}", method=cam_method)
