"""Live: watch runs train. Curves, progress, the per-layer map, stop."""

from __future__ import annotations

import json
import time

import streamlit as st

from core.errors import TLabError
from core.runs import jobs
from core.train import strategies
from ui import charts
from ui.common import config_of, label, latest_group, pick_runs, plain, scored_with, step_series, store
from ui.sharing import download_pack, upload_pack

ACTIVE = ("queued", "running")
# Long runs log tens of thousands of steps: each refresh reads at most about this
# many evenly spaced ones per run (the charts draw no more points anyway).
STEP_POINTS = 500
REFRESH_SECONDS = 2.0  # live enough; each refresh redraws six charts, which on 2 cores competes with training

st.title("Live")
upload_pack("live_pack_upload")
s = store()
runs = s.runs()
if runs.empty:
    st.info("No runs yet: set one up on the Experiment page and press Launch.")
    st.page_link("views/experiment.py", label="Go to Experiment", icon="🧪")
    st.stop()

launched = st.session_state.pop("live_runs", None)
if launched:
    st.session_state["live_pick"] = launched  # a fresh launch shows its own runs
selected = pick_runs(runs, "live_pick", latest_group(runs), help="The latest group (a run and its scratch twin) is preselected.")
if not selected:
    st.warning("Pick at least one run to watch.")
    st.stop()
by_id = {r["id"]: r for r in charts.records(runs)}
anything_active = bool(runs[runs["id"].isin(selected)]["status"].isin(ACTIVE).any())
download_pack(selected, {i for i, r in by_id.items() if r["status"] not in ACTIVE}, "live_pack_download")
map_run = st.selectbox("Layer map of", selected, format_func=lambda i: label(by_id[i]), key="live_map_run")


def _progress(row: dict, steps) -> tuple[float, str]:
    cfg = config_of(row)
    spe = row.get("steps_per_epoch") or 0
    total = spe * cfg["epochs"]
    done = int(steps["step"].to_numpy().max()) if len(steps) else 0
    world = row.get("world_size") or 1
    over = f" over {world} processes" if world > 1 else ""
    if row["status"] == "finished":
        return 1.0, f"done: {row.get('epochs_done') or cfg['epochs']} of {cfg['epochs']} epoch(s){over}"
    if not total:
        if row["status"] == "queued":
            return 0.0, "waiting to start"
        decoding = s.decode_progress(row["id"])  # a folder's first decode: the worker notes each tenth
        if decoding and decoding[0] < decoding[1]:
            return decoding[0] / decoding[1], f"decoding {decoding[0]:,} / {decoding[1]:,} images on every core…"
        return 0.0, "loading data and model…"
    ips = float(steps["images_per_second"].tail(20).mean()) if len(steps) else 0.0
    rate = ips / max(1, cfg["batch_size"])  # steps per second
    eta = (total - done) / rate if rate > 0 else float("nan")
    text = (f"epoch {min(cfg['epochs'], done // spe + 1)}/{cfg['epochs']} · step {done}/{total} · "
            f"{ips:.0f} images/s{over}" + (f" · ETA {eta:.0f}s" if row["status"] == "running" and eta == eta else ""))
    return min(1.0, done / total), text


def _processes(rows: dict) -> None:
    """Runs trained by several processes (torchrun): world size and each process's images/s."""
    multi = [i for i in selected if (rows[i].get("world_size") or 1) > 1]
    if not multi:
        return
    st.subheader("Processes")
    ranks = s.metrics(multi, "rank")
    for run_id in multi:
        row = rows[run_id]
        mine = ranks[ranks["run_id"] == run_id] if len(ranks) else ranks
        latest = mine[mine["step"] == mine["step"].max()] if len(mine) else mine
        per = " · ".join(f"rank {int(r['rank'])}: {r['images_per_second']:.0f} images/s"
                         for r in latest.to_dict("records"))
        st.markdown(f"**{plain(label(row))}**: world size **{row['world_size']}**" + (f" — {per}" if per else ""),
                    help="One run over several processes (torchrun + DDP): each takes its slice of every global "
                         "batch; rank 0 writes the metrics. The slowest process sets the pace of all.")
        if len(mine):
            st.plotly_chart(charts.rank_throughput(mine), width="stretch", key=f"live_ranks_{run_id}",
                            config={"displayModeBar": False})


@st.fragment(run_every=REFRESH_SECONDS if anything_active else None)
def live_view() -> None:
    rows = {i: s.run(i) for i in selected}
    df = runs[runs["id"].isin(selected)].copy()
    df["status"] = df["id"].map(lambda i: rows[i]["status"])
    steps = step_series(s, rows, STEP_POINTS)
    epochs = s.metrics(selected)

    per_run = dict(tuple(steps.groupby("run_id", sort=False))) if len(steps) else {}
    with st.container(key="live_status"):
        for run_id in selected:
            row = rows[run_id]
            frac, text = _progress(row, per_run.get(run_id, steps.iloc[:0]))
            c1, c2, c3 = st.columns([5, 4, 1])
            icon = {"queued": "⏳", "running": "🏃", "finished": "✅", "failed": "❌", "cancelled": "⏹️", "interrupted": "⚠️", "pruned": "✂️"}
            c1.markdown(f"{icon.get(row['status'], '')} **{plain(label(row))}** — {row['status']}"
                        + (f": {plain(row['reason'])}" if row["reason"] else "")
                        + (f" · test accuracy **{row['test_accuracy']:.3f}**" if row["test_accuracy"] is not None else "")
                        + scored_with(row))
            c2.progress(frac, text=text)
            if row["status"] in ACTIVE and c3.button("Stop", key=f"stop_{run_id}"):
                try:
                    jobs.cancel(run_id, s)
                except TLabError as e:
                    st.warning(plain(e))

    curves = (charts.curves_grid(epochs, df) if len(epochs)
              else charts.empty_figure("Curves appear when the first epoch ends; the loss per step grows below.", "Learning curves"))
    st.plotly_chart(curves, width="stretch", key="live_curves", config={"displayModeBar": False})
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.step_loss(steps, df), width="stretch", key="live_steps", config={"displayModeBar": False})
    c2.plotly_chart(charts.lr_curve(steps, df), width="stretch", key="live_lr", config={"displayModeBar": False})

    _processes(rows)

    st.subheader("Layer map, live")
    stats = s.layer_stats(map_run)
    row = rows[map_run]
    if len(stats):
        last = int(stats["epoch"].max())
        st.caption(f"Epoch {last}: how far each layer group moved from where it started (relative weight change) "
                   "and how strong its gradients were. Frozen groups stay at zero.")
        st.plotly_chart(charts.layer_stats_map(stats, last), width="stretch", key="live_layer_stats",
                        config={"displayModeBar": False})
        if stats["epoch"].nunique() > 1:
            st.plotly_chart(charts.thaw_timeline(stats), width="stretch", key="live_thaw", config={"displayModeBar": False})
    elif row.get("plan"):
        st.plotly_chart(charts.layer_map(strategies.group_rows(json.loads(row["plan"]))), width="stretch",
                        key="live_layer_plan", config={"displayModeBar": False})
    else:
        st.caption("The layer map appears when the run starts.")

    # The run picker's chips ("— queued"), the pack download's ended runs and the timer were drawn
    # from the statuses of the last full run: when any selected run has changed status since,
    # one full rerun redraws them (when everything has ended, that also stops the timer).
    if any(rows[i]["status"] != by_id[i]["status"] for i in selected):
        time.sleep(0.2)
        st.rerun()


live_view()

with st.expander("All runs", expanded=False):
    show = runs.iloc[::-1][["id", "status", "strategy", "backbone", "dataset", "epochs_done", "epochs", "best_val_accuracy", "test_accuracy", "reason"]]
    st.dataframe(show, hide_index=True, width="stretch")
    ended = [i for i, r in by_id.items() if r["status"] not in ACTIVE]
    to_delete = st.multiselect("Delete ended runs", ended, key="delete_pick", format_func=lambda i: label(by_id[i]))
    if st.button("Delete", key="delete_runs", disabled=not to_delete):
        for run_id in to_delete:
            try:
                s.delete_run(run_id)
            except TLabError as e:
                st.error(plain(e))
        st.session_state.pop("delete_pick", None)
        st.rerun()
