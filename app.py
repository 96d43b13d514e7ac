"""Transfer Learning Lab: `streamlit run app.py`.

Entry point only: page config and navigation. The pages arrive with the
dashboard; until then this shows what the engine offers.
"""

import streamlit as st

from core import backbones, data, strategies

st.set_page_config(page_title="Transfer Learning Lab", layout="wide")
st.title("Transfer Learning Lab")
st.write(
    "The engine is ready; the dashboard pages come next. Meanwhile, train from a terminal: "
    "`python -m core train --backbone efficientnet_lite0 --strategy full --dataset digits`."
)
col1, col2, col3 = st.columns(3)
col1.subheader("Backbones")
col1.table([{"name": s.name, "title": s.title} for s in backbones.REGISTRY.values()])
col2.subheader("Strategies")
col2.table([{"name": s.name, "title": s.title} for s in strategies.REGISTRY.values()])
col3.subheader("Datasets")
col3.table([{"name": s.name, "title": s.title} for s in data.REGISTRY.values()])
