"""Streamlit helpers shared by the pages: no training, no SQL, only UI."""
