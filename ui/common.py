"""What several pages need: the run store handle, run labels, run pickers."""

from __future__ import annotations

import json
import re

import pandas as pd
import streamlit as st

from core import paths
from core.runs import integrity
from core.runs.schema import TERMINAL
from core.runs.store import Store, StoreError
from ui.charts.base import records


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return Store(path)


def store() -> Store:
    """One store handle per data folder, shared by sessions (it locks itself).
    Recovering on each page run marks runs whose process died as interrupted."""
    try:
        s = _store(str(paths.home().resolve() / "tlab.sqlite"))
    except StoreError as e:  # damaged or foreign: say what still works, serve no page that needs it
        st.error(str(e))
        st.stop()
    if s.damage:
        st.warning(integrity.damage_summary(s.damage))
    try:
        s.recover()
    except StoreError:
        if not s.damage:
            raise
    return s


@st.cache_data(show_spinner=False, max_entries=64)
def _ended_steps(path: str, ended: tuple[tuple[str, str, float | None], ...], max_points: int) -> pd.DataFrame:
    frames = [f for f in (_store(path).metrics([run_id], "step", max_points=max_points) for run_id, _, _ in ended) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def step_series(s: Store, rows: dict[str, dict], max_points: int) -> pd.DataFrame:
    """The step metrics of the runs in `rows` (id -> `Store.run` row), about
    `max_points` per run, as `Store.metrics(ids, "step", max_points=...)`
    gives them. An ended run's series can't change until it is resumed, which
    changes its status and end time: the ended runs' series are read once per
    (run, status, end) set and kept; only the runs still going are read again
    (the Live page redraws every selected run each refresh)."""
    ended = tuple((i, r["status"], r.get("ended")) for i, r in rows.items() if r["status"] in TERMINAL)
    active = [i for i, r in rows.items() if r["status"] not in TERMINAL]
    frames = [f for f in (_ended_steps(str(s.path), ended, max_points) if ended else pd.DataFrame(),
                          s.metrics(active, "step", max_points=max_points) if active else pd.DataFrame()) if len(f)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else pd.DataFrame()


# Inline markdown, HTML, LaTeX ($), Streamlit's :color[...] and :emoji: (:).
_MARKDOWN = re.compile(r"([\\`*_\[\]<>~$&|:])")
# Block syntax can only start the text (line breaks become spaces).
# ("-0.5" and "0.92" stay as they are: a marker needs a space or the end after it).
_BLOCK_START = re.compile(r"^(|\d{1,9})((?<=\d)[.)](?=\s|$)|(?<!\d)[-+#](?!\d)|(?<!\d)>)")
# Streamlit links bare URLs, www. names and e-mail addresses in the rendered
# text (escapes and character references don't stop it): an invisible word
# joiner inside "://", "www." and before "@" does, and the text still reads as typed.
JOINER = "\u2060"
_AUTOLINK = ((re.compile(r"(?<=\\:)(?=//)"), JOINER), (re.compile(r"(?i)(?<=www)(?=\.)"), JOINER), (re.compile(r"(?=@)"), JOINER))


def plain(text) -> str:
    """Text that came from a person (run, class, file and folder names, and the
    messages that quote them) made safe for st.markdown, st.error and friends:
    markdown, HTML, LaTeX and Streamlit's colour/emoji syntax escaped, URLs made
    unlinkable and line breaks made spaces, so it shows as typed and can't add a
    link, an image, a heading or a tag."""
    out = _BLOCK_START.sub(r"\1\\\2", _MARKDOWN.sub(r"\\\1", " ".join(str(text).split())))
    for pattern, ref in _AUTOLINK:
        out = pattern.sub(ref, out)
    return out


def plain_rows(rows):
    """A table for st.table, which renders markdown in its cells: every text
    cell through `plain` (rows as a list of dicts or a dict of columns)."""
    def cell(v):
        return plain(v) if isinstance(v, str) else v

    if isinstance(rows, dict):
        return {k: [cell(v) for v in col] for k, col in rows.items()}
    return [{k: cell(v) for k, v in r.items()} for r in rows]


def label(row) -> str:
    """'full · efficientnet_lite0 · digits “transfer” (a1b2c3)' for a runs() row or a store.run() row."""
    row = dict(row)
    cfg = config_of(row)
    name = f" “{row['name']}”" if row.get("name") else ""
    dataset = cfg["dataset"].split("/")[-1] if cfg["dataset"].startswith("folder:") else cfg["dataset"]
    return f"{cfg['strategy']} · {cfg['backbone']} · {dataset}{name} ({row['id'][-6:]})"


def latest_group(runs: pd.DataFrame) -> list[str]:
    if runs.empty:
        return []
    group = runs.sort_values("created").iloc[-1]["group_id"]
    return runs[runs["group_id"] == group]["id"].tolist()


def pick_runs(runs: pd.DataFrame, key: str, default: list[str], help: str = "") -> list[str]:
    """A multiselect of runs, newest first, labelled for people."""
    labels = {r["id"]: f"{label(r)} — {r['status']}" for r in records(runs.iloc[::-1])}
    if key in st.session_state:  # drop ids deleted since
        st.session_state[key] = [i for i in st.session_state[key] if i in labels]
    return st.multiselect("Runs", list(labels), default=[d for d in default if d in labels] if key not in st.session_state else None,
                          format_func=labels.get, key=key, help=help)


def config_of(row) -> dict:
    return json.loads(row["config"]) if isinstance(row["config"], str) else row["config"]


def result_of(row) -> dict:
    """A run's result JSON (the engine's RunResult), {} before it ended."""
    try:
        return json.loads(row.get("result") or "{}") or {}
    except ValueError:
        return {}


def scored_with(row) -> str:
    """' · epoch E's weights (best)' for a finished run whose best epoch was not its last."""
    res = result_of(row)
    scored, last = res.get("scored_epoch"), res.get("epochs")
    if scored is None or row.get("status") != "finished":
        return ""
    if scored != last:
        why = "best validation"
    else:
        why = "the last, also the best" if res.get("best_epoch") == scored else "the last"
    return f" · scored with epoch {scored}'s weights ({why})"


def recipe_columns(result: dict) -> dict:
    """Compare's table cells for what the training recipe adds to a result."""
    def num(key: str) -> str:
        return f"{result[key]:.4f}" if result.get(key) is not None else "-"

    return {"balanced accuracy": num("balanced_accuracy"),
            "scored epoch": result.get("scored_epoch") if result.get("scored_epoch") is not None else "-",
            "ECE": num("ece"), "ECE calibrated": num("ece_calibrated"), "stopped": result.get("stop_reason") or "-"}


def task_progress(key: str, running: bool, busy: str, failed: str) -> None:
    """The state of the background task whose id is in `st.session_state[key]`
    (core.runs.tasks): `busy` and its progress while it runs, refreshed every 2 s;
    a full rerun when it ends, so the page draws its result; `failed` and the
    reason if it failed."""

    @st.fragment(run_every=2.0 if running else None)
    def _progress() -> None:
        from core.runs import tasks

        t = tasks.get(st.session_state[key]) if st.session_state.get(key) else None
        if t is None:
            return
        state = t.state
        if state == "running":
            st.info(f"{busy} {plain(t.progress())}")
        elif running:  # it ended since the page last ran: draw the result
            st.rerun()
        elif state == "failed":
            st.error(f"{failed} {plain(t.error())}")

    _progress()


def task_running(key: str) -> bool:
    """Whether the background task whose id is in `st.session_state[key]` is still running."""
    from core.runs import tasks

    task_id = st.session_state.get(key)
    return bool(task_id) and tasks.get(task_id).state == "running"


def finished_output(key: str, any_exit: bool = False) -> dict | None:
    """The --json output of the background task in `st.session_state[key]` once
    it has finished; the key is cleared then, so it is handed over once. None
    while it runs, when it failed (`task_progress` says why; with `any_exit`, a
    command that printed its answer and then exited non-zero hands it over too)
    or when there is none."""
    from core.runs import tasks

    task_id = st.session_state.get(key)
    state = tasks.get(task_id).state if task_id else None
    if state not in (("finished", "failed") if any_exit else ("finished",)):
        return None
    out = tasks.get(task_id).output()
    if out is not None:
        del st.session_state[key]
    return out
