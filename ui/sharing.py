"""Packs of runs on the Live and Compare pages: download the runs shown as one
ZIP, upload a pack (from another data folder, e.g. a cluster node) to add its runs here."""

from __future__ import annotations

import streamlit as st

from core.errors import TLabError
from core.service import sharing
from ui.common import plain


def _on_upload(key: str) -> None:
    up = st.session_state.get(key)
    if up is None:
        return
    try:
        ids = sharing.unpack_upload(up.name, up.getvalue())
    except TLabError as e:
        st.session_state[f"{key}_note"] = ("error", str(e))
    else:
        st.session_state[f"{key}_note"] = ("success", f"Added {len(ids)} run(s) from {up.name}: {', '.join(ids)}.")


def upload_pack(key: str) -> None:
    """An uploader that unpacks a pack of runs into this data folder (once per upload)."""
    with st.expander("Add runs from a pack (.zip)", expanded=False, key=f"{key}_box"):
        st.file_uploader("Pack of runs (made by Download as a pack, or `python -m core pack`)", type=["zip"], key=key,
                         on_change=_on_upload, args=(key,))
    note = st.session_state.pop(f"{key}_note", None)
    if note:
        (st.error if note[0] == "error" else st.success)(plain(note[1]))


def download_pack(run_ids: list[str], ended: set[str], key: str) -> None:
    """Download the ended runs among `run_ids` as one pack."""
    ids = [i for i in run_ids if i in ended]

    def content() -> bytes:
        try:
            return sharing.pack(ids)
        except TLabError as e:  # shown as the download's text rather than a stack trace
            return str(e).encode()

    st.download_button(f"Download {len(ids)} run(s) as a pack (.zip)", content, file_name="runs.zip",
                       mime="application/zip", key=key, on_click="ignore", disabled=not ids,
                       help="Store rows, checkpoints, settings and TensorBoard events of the ended runs shown: "
                            "upload it on another dashboard's Compare page, or `python -m core unpack runs.zip`.")
