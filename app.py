"""Transfer Learning Lab: `streamlit run app.py`. Page config and navigation only.

The pages live in views/, not pages/: Streamlit treats a folder named pages/
as its legacy multipage app until st.navigation has run once, so on a fresh
server the first visit to /live or /compare would get the wrong app.
"""

import streamlit as st

st.set_page_config(page_title="Transfer Learning Lab", page_icon="🧠", layout="wide")

pages = [
    st.Page("views/experiment.py", title="Experiment", icon="🧪", default=True),
    st.Page("views/live.py", title="Live", icon="📈", url_path="live"),
    st.Page("views/compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page("views/predict.py", title="Predict", icon="🔍", url_path="predict"),
    st.Page("views/inspect.py", title="Inspect", icon="🔬", url_path="inspect"),
    st.Page("views/adapt.py", title="Adapt", icon="🎯", url_path="adapt"),
    st.Page("views/skips.py", title="Skip connections", icon="🪜", url_path="skips"),
    st.Page("views/storage.py", title="Storage", icon="🗄️", url_path="storage"),
]
st.navigation(pages, position="top").run()
