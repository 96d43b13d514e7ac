"""Skip connections: the degradation problem, run for real, and the real stage
table of a backbone."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core import paths
from core.errors import TLabError
from core.lessons import skipdemo, stages
from core.runs import tasks
from core.train import backbones
from ui import charts
from ui.common import task_progress

DEPTH_CHOICES = [8, 14, 20, 32, 44, 56]
TASK_KEY = "skip_task"

st.title("Why ResNet's skip connections matter")
st.caption(
    "Plain convolutional stacks and the very same stacks with identity skips (`out = F(x) + x`), at several depths, "
    "trained for the same number of SGD steps on the 8x8 digits. Deeper plain nets train *worse* than shallow ones "
    "(He et al. 2016's degradation problem); residual nets don't. The right chart says why: at initialisation the "
    "gradient reaching each layer drifts by orders of magnitude through a deep plain stack."
)


def _result_file(bn: bool):
    return paths.home() / "skipdemo" / ("batchnorm.json" if bn else "no-batchnorm.json")


c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
depths = c1.multiselect("Depths (layers)", DEPTH_CHOICES, default=[8, 20, 56], key="skip_depths",
                        help="6n+2 layers: a stem, three stages of n two-convolution blocks, a linear head.")
steps = c2.number_input("SGD steps", 10, 2000, skipdemo.STEPS, step=10, key="skip_steps")
bn = c3.checkbox("BatchNorm", True, key="skip_bn", help="Switch it off to see the other failure: vanishing gradients.")
task_id = st.session_state.get(TASK_KEY)
task = tasks.get(task_id) if task_id else None
running = task is not None and task.state == "running"
if c4.button("Run the demo", type="primary", key="skip_run", disabled=running or not depths, width="stretch"):
    out = _result_file(bn)
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["skip-demo", "--depths", ",".join(str(d) for d in sorted(depths)), "--steps", str(int(steps)),
            "--out", str(out), "--json"] + ([] if bn else ["--no-batchnorm"])
    st.session_state[TASK_KEY] = tasks.start(args).id
    st.rerun()
if not depths:
    st.info("Pick at least one depth.")



task_progress(TASK_KEY, running, "Training the stacks in the background…", "The demo failed:")

result_path = _result_file(bn)
result = None
if result_path.exists():
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = None
if result is None:
    st.info(f"No result {'with' if bn else 'without'} BatchNorm yet: press **Run the demo** "
            "(about a minute on a laptop CPU for depths 8, 20, 56 at 150 steps).")
else:
    st.caption(f"Last run: {result['steps']} steps per net, BatchNorm {'on' if result['batchnorm'] else 'off'}.")
    left, right = st.columns(2)
    left.plotly_chart(charts.skip_losses(result["curves"]), width="stretch", key="skip_losses",
                      config={"displayModeBar": False})
    right.plotly_chart(charts.skip_grad_norms(result["curves"]), width="stretch", key="skip_grads",
                       config={"displayModeBar": False})
    rows = pd.DataFrame(result["rows"])
    rows["stack"] = rows["residual"].map({True: "residual", False: "plain"})
    st.dataframe(rows[["depth", "stack", "final_loss", "first_layer_grad_norm", "grad_norm_spread", "params", "seconds"]],
                 hide_index=True, width="stretch",
                 column_config={"final_loss": st.column_config.NumberColumn("final loss", format="%.3f"),
                                "first_layer_grad_norm": st.column_config.NumberColumn("first layer ‖grad‖", format="%.3g"),
                                "grad_norm_spread": st.column_config.NumberColumn("largest / smallest ‖grad‖", format="%.3g"),
                                "seconds": st.column_config.NumberColumn("s", format="%.1f")})

st.subheader("Inside a real backbone")
st.caption("Each stage's output shape, channels, blocks and parameters, computed from the model for the input size "
           "(a forward pass on PyTorch's meta device: no weights, no memory).")
names = list(backbones.REGISTRY)
b1, b2 = st.columns([3, 1])
name = b1.selectbox("Backbone", names, index=names.index("resnet18"), key="stage_backbone",
                    format_func=lambda n: backbones.get(n).title)
size = b2.number_input("Input size (px)", 16, 512, 224, step=16, key="stage_size")
try:
    table = pd.DataFrame(stages.stage_table(backbones.get(name), int(size)))
except (TLabError, RuntimeError, AssertionError) as e:
    st.error(f"{backbones.get(name).title} can't take {int(size)} px inputs: {' '.join(str(e).split())[:200]}")
else:
    total = int(table["params"].sum())
    st.table(table[["stage", "modules", "output_shape", "channels", "blocks", "params"]]
             .assign(params=table["params"].map(lambda p: f"{p:,}")))
    st.caption(f"{total:,} parameters in all (with a 1000-class head).")
