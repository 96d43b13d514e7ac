"""Transfer Learning Lab: `streamlit run app.py`. Page config and navigation only."""

import streamlit as st

st.set_page_config(page_title="Transfer Learning Lab", page_icon="🧠", layout="wide")

pages = [
    st.Page("pages/experiment.py", title="Experiment", icon="🧪", default=True),
    st.Page("pages/live.py", title="Live", icon="📈", url_path="live"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page("pages/predict.py", title="Predict", icon="🔍", url_path="predict"),
]
st.navigation(pages, position="top").run()
