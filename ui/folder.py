"""A folder of the person's own images on the Experiment page: counts and a
few samples at once (nothing else decoded), then its decode at the form's
image size in a background task with a progress bar."""

from __future__ import annotations

import streamlit as st

from core.errors import FolderNotAllowed, TLabError
from core.service import forms, launching
from core.train import decode
from ui.common import finished_output, plain, plain_rows, task_running

TASK_KEY, RESULT_KEY = "folder_decode_task", "folder_decode_result"


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _preview(dataset: str) -> forms.FolderPreview:
    # Every widget change reruns the page: list and sample a large folder once a minute, not each time.
    return forms.preview_folder(dataset)


def folder_preview(dataset: str) -> forms.FolderPreview | None:
    """Counts per class and a few images of each; None (after saying why) when the folder can't be used."""
    try:
        view = _preview(dataset)
    except TLabError as e:
        st.error(plain(e))
        if isinstance(e, FolderNotAllowed):  # the command again, in a box with a copy button
            st.code(e.command, language="bash")
        return None
    st.write(f"**{view.images:,} images in {len(view.class_names)} classes**"
             + (f"; {view.skipped} unreadable file(s) skipped, e.g. {plain(view.skipped_example)}" if view.skipped else ""))
    st.caption(f"Layout: {plain(view.layout)}")
    with st.expander("Preview: a few images per class", expanded=True):
        for name, imgs in zip(view.class_names, view.samples):
            st.image(imgs, caption=[plain(name) for _ in imgs], width=64)
        st.table(plain_rows({"class": view.class_names, "images": view.counts}))
    if view.warning:
        st.warning(plain(view.warning))
    return view


def decode_section(dataset: str, image_size: int, images: int) -> None:
    """Whether runs at `image_size` start from decoded images; a button that
    decodes them now, and the decode's progress while it runs."""
    running = task_running(TASK_KEY)
    done = finished_output(TASK_KEY)
    if done is not None:
        st.session_state[RESULT_KEY] = done
    try:
        state = forms.folder_state(dataset, image_size, images)
    except TLabError as e:
        st.error(plain(e))
        return
    if running:
        _progress(running)
        return
    result = st.session_state.get(RESULT_KEY)
    if state.state == "decoded" and result and result.get("dataset") == dataset and result.get("skipped"):
        st.caption(plain(f"{state.message} {result['skipped']} unreadable file(s) skipped: "
                         + ", ".join(result.get("skipped_examples", []))))
    else:
        st.caption(plain(state.message))
    if state.state == "todo" and st.button(f"Decode the {state.images:,} images at {image_size} px now",
                                           key="folder_decode"):
        try:
            task = launching.start_decode(dataset, image_size)
        except TLabError as e:
            st.error(plain(e))
        else:
            st.session_state[TASK_KEY] = task.id
            st.rerun()  # a full run starts the progress fragment's timer
    _progress(False)


def _progress(running: bool) -> None:
    @st.fragment(run_every=1.0 if running else None)
    def _bar() -> None:
        from core.runs import tasks

        task_id = st.session_state.get(TASK_KEY)
        if not task_id:
            return
        t = tasks.get(task_id)
        state = t.state
        if state == "running":
            done, total = decode.parse_progress(t.progress()) or (0, 0)
            st.progress(done / total if total else 0.0,
                        text=f"Decoding {done:,} / {total:,} images on every core…" if total else "Starting the decode…")
        elif running:  # it ended since the page last ran: draw the result
            st.rerun()
        elif state == "failed":
            st.error(f"The decode failed: {plain(t.error())}")

    _bar()
