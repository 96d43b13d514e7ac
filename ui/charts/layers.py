"""Layer groups: the frozen/trainable map, per-group stats, the thaw timeline,
and plans side by side (Experiment, Live, Compare)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import get_colorscale
from plotly.subplots import make_subplots

from ui.charts.base import (
    FROZEN_COLOR, FROZEN_LABEL, TRAINABLE_COLOR, TRAINABLE_LABEL, _human, _is_empty, _is_frozen, _lr_text, _pct,
    _records, _style, _styled, empty_figure
)
from ui.charts.spec import Spec, array

# --- layer groups -------------------------------------------------------------------


def layer_map(groups: list[dict] | pd.DataFrame, title: str | None = None) -> go.Figure:
    """Every layer group in forward order, stem left to head right, one bar
    each whose height is its parameter count (log axis, so a 12k-parameter
    head stays visible next to million-parameter stages), orange when it
    trains and slate when frozen. Rows like `LayerPlan.group_table()`."""
    title = title or "Layer map"
    rows = [r for r in _records(groups) if r.get("group") is not None]
    if not rows:
        return empty_figure("No layer groups to show", title)
    order = [str(r["group"]) for r in rows]
    total = sum(int(r.get("params") or 0) for r in rows)
    trainable = sum(int(r.get("params") or 0) for r in rows if not _is_frozen(r.get("frozen")))
    share = trainable / total if total else 0.0
    subtitle = f"trainable {_human(trainable)} of {_human(total)} parameters ({_pct(share)})"

    fig = go.Figure()
    labels = []
    for frozen, name, color in ((False, TRAINABLE_LABEL, TRAINABLE_COLOR), (True, FROZEN_LABEL, FROZEN_COLOR)):
        part = [r for r in rows if _is_frozen(r.get("frozen")) == frozen and int(r.get("params") or 0) > 0]
        if not part:
            continue
        labels.append(name)
        params = [int(r["params"]) for r in part]
        fig.add_trace(go.Bar(
            x=[str(r["group"]) for r in part],
            y=params,
            name=name,
            marker={"color": color, "line": {"width": 0}},
            text=[("🔒 " if frozen else "") + _human(p) for p in params],
            textposition="outside",
            cliponaxis=False,
            customdata=[[f"{p:,}", "frozen" if frozen else "trainable", _lr_text(r.get("lr"), frozen),
                         f"{p / total:.2%}" if total else "—"] for p, r in zip(params, part)],
            hovertemplate="<b>%{x}</b><br>%{customdata[1]}<br>%{customdata[0]} parameters (%{customdata[3]})"
                          "<br>learning rate %{customdata[2]}<extra></extra>",
        ))
    biggest = max((int(r.get("params") or 0) for r in rows), default=1)
    fig.update_layout(barmode="overlay", bargap=0.25)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, title_text="layer group (input → output)")
    fig.update_yaxes(type="log", title_text="parameters", range=[0, math.log10(max(biggest, 10)) + 0.6])
    return _style(fig, title, subtitle, legend_labels=labels)


def _epoch_slice(stats: pd.DataFrame, epoch: int | None) -> tuple[pd.DataFrame, int]:
    epochs = sorted(int(e) for e in stats["epoch"].dropna().unique())
    if epoch is None or epoch not in epochs:
        # default: the latest; an epoch not recorded: the latest one before it
        before = [e for e in epochs if epoch is None or e <= epoch]
        epoch = before[-1] if before else epochs[0]
    part = stats[stats["epoch"] == epoch]
    if "position" in part:
        part = part.sort_values("position", kind="stable")
    return part, epoch


def layer_stats_map(stats: pd.DataFrame, epoch: int | None = None, log_y: bool = False) -> go.Figure:
    """Per layer group, in forward order, at `epoch` (default: the latest):
    how far its weights moved from where they started, ||W-W0||/||W0||, and
    its mean gradient norm. Two panels; bars coloured frozen/trainable as in
    `layer_map`. Input: `Store.layer_stats(run_id)`."""
    title = "What each layer group learned"
    if _is_empty(stats, "epoch", "group", "frozen"):
        return empty_figure("No layer statistics yet: they arrive at the end of each epoch", title)
    part, epoch = _epoch_slice(stats, epoch)
    order = [str(g) for g in part["group"]]
    spec = Spec(1, 2, ("weight change ‖W−W₀‖ / ‖W₀‖", "gradient norm (mean per step)"), horizontal_spacing=0.1)
    labels = []
    for frozen, name, color in ((False, TRAINABLE_LABEL, TRAINABLE_COLOR), (True, FROZEN_LABEL, FROZEN_COLOR)):
        sub = part[part["frozen"].map(_is_frozen) == frozen]
        if sub.empty:
            continue
        labels.append(name)
        custom = [[f"{int(p):,}" if pd.notna(p) else "—", _lr_text(lr, frozen)]
                  for p, lr in zip(sub.get("params", [None] * len(sub)), sub.get("lr", [None] * len(sub)))]
        for col, key in ((1, "weight_change"), (2, "grad_norm")):
            values = sub[key] if key in sub else pd.Series([np.nan] * len(sub))
            spec.add({
                "type": "bar", "x": [str(g) for g in sub["group"]], "y": array(values).astype(float), "name": name,
                "legendgroup": name, "showlegend": col == 1, "marker": {"color": color, "line": {"width": 0}},
                "text": ["🔒" if frozen else f"{v:.2g}" if pd.notna(v) else "" for v in values],
                "textposition": "outside", "cliponaxis": False, "customdata": custom,
                "hovertemplate": f"<b>%{{x}}</b> ({'frozen' if frozen else 'trainable'})<br>"
                                 f"{'weight change' if col == 1 else 'gradient norm'} %{{y:.3g}}"
                                 "<br>%{customdata[0]} parameters<br>learning rate %{customdata[1]}<extra></extra>",
            }, 1, col)
    spec.layout.update(barmode="overlay", bargap=0.25)
    spec.xaxes(type="category", categoryorder="array", categoryarray=order, tickangle=-45)
    spec.yaxes(**({"type": "log"} if log_y else {"rangemode": "tozero"}))
    spec.annotations(font={"size": 12})
    return _styled(spec, title, f"epoch {epoch}", legend_labels=labels, panel_titles=True)


def thaw_timeline(stats: pd.DataFrame, value: str = "frozen") -> go.Figure:
    """A heatmap, layer groups (stem on top, head at the bottom) by epoch:
    with value="frozen", slate while frozen and orange once trainable, which
    shows when each group thawed under gradual unfreezing; with
    value="weight_change", how far each group had moved by each epoch."""
    title = "When each layer group trained" if value == "frozen" else "Weight change by epoch"
    if _is_empty(stats, "epoch", "group", "frozen"):
        return empty_figure("No layer statistics yet: they arrive at the end of each epoch", title)
    if value not in ("frozen", "weight_change", "grad_norm"):
        raise ValueError(f"value must be 'frozen', 'weight_change' or 'grad_norm', not {value!r}")
    df = stats.dropna(subset=["epoch"])
    if "position" in df:
        order = list(df.sort_values(["position", "epoch"], kind="stable").drop_duplicates("group")["group"].astype(str))
    else:
        order = list(dict.fromkeys(df["group"].astype(str)))
    epochs = sorted(int(e) for e in df["epoch"].unique())
    # groups x epochs grids, the last value given for each cell (numpy: three pivot tables cost a Live refresh 30 ms)
    at = (pd.Index(order).get_indexer(df["group"].astype(str)), pd.Index(epochs).get_indexer(df["epoch"].astype(int)))

    def grid(values) -> np.ndarray:
        out = np.full((len(order), len(epochs)), np.nan)
        values = np.asarray(values, dtype=float)
        known = ~np.isnan(values)
        out[at[0][known], at[1][known]] = values[known]
        return out

    state = grid((~df["frozen"].map(_is_frozen)).astype(float))
    z = grid(df[value]) if value in df and value != "frozen" else state
    change = grid(df["weight_change"]) if "weight_change" in df else state * np.nan
    status = [["" if np.isnan(s) else "trainable" if s else "frozen" for s in row] for row in state]
    custom = np.dstack([np.array(status, dtype=object),
                        np.array([["—" if np.isnan(c) else f"{c:.3g}" for c in row] for row in change], dtype=object)])
    heat: dict = {
        "x": epochs, "y": order, "z": z, "customdata": custom, "xgap": 2, "ygap": 2,
        "hovertemplate": "<b>%{y}</b>, epoch %{x}<br>%{customdata[0]}<br>weight change %{customdata[1]}<extra></extra>",
    }
    if value == "frozen":
        heat.update(
            zmin=0, zmax=1, showscale=False,
            colorscale=[[0, FROZEN_COLOR], [0.5, FROZEN_COLOR], [0.5, TRAINABLE_COLOR], [1, TRAINABLE_COLOR]],
            text=[["🔒" if s == "frozen" else "" for s in row] for row in status],
            texttemplate="%{text}",
        )
        thawed = []
        for g, row in zip(order, state):
            first = next((e for e, s in zip(epochs, row) if s == 1), None)
            if first is not None and first > epochs[0]:
                thawed.append((first, g))
        thawed.sort(key=lambda t: t[0])  # stable: forward order within an epoch
        subtitle = ("thawed: " + ", ".join(f"{g} at epoch {e}" for e, g in thawed)) if thawed else "orange: trainable, slate: frozen"
    else:
        # spelled out (plotly.py's validation used to do it): plotly.js has no scale named "Oranges"
        heat.update(colorscale=get_colorscale("Oranges"), showscale=True, colorbar={"thickness": 10, "len": 0.9})
        subtitle = "||W−W₀|| / ||W₀||" if value == "weight_change" else "gradient norm"
    spec = Spec()
    spec.add({"type": "heatmap", **heat})
    spec.xaxes(title={"text": "epoch"}, type="category" if len(epochs) == 1 else "linear",
               **({"tickmode": "array", "tickvals": epochs} if len(epochs) <= 15 else {}))
    spec.yaxes(type="category", categoryorder="array", categoryarray=order, autorange="reversed")
    height = min(420, max(240, 90 + 22 * len(order)))
    return _styled(spec, title, subtitle, height=height)

def layer_maps_side_by_side(plans: list[tuple[str, list[dict]]], title: str | None = None) -> go.Figure:
    """One small layer map per run of a strategy race, side by side (up to
    four in a row, else rows of three), each panel titled with its label:
    the run's layer groups in forward order, bar height its parameter count
    on a log axis shared by every panel, orange when it trains and slate
    when frozen, exactly as `layer_map`; one legend for all panels. Each
    plan is (label, rows like `LayerPlan.group_table()`: group, params,
    frozen)."""
    title = title or "What each strategy trains"
    panels = [(str(label), [r for r in _records(groups) if r.get("group") is not None]) for label, groups in plans or []]
    if not any(rows for _, rows in panels):
        return empty_figure("No layer groups to show", title)
    n = len(panels)
    cols = n if n <= 4 else 3
    nrows = math.ceil(n / cols)
    height = min(640, 120 + 230 * nrows)
    # between rows: room for the upper row's slanted group names and the lower row's panel titles
    spacing = min(0.3, 80 / (height - 110), 1 / (nrows - 1)) if nrows > 1 else 0.0
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[label for label, _ in panels],
                        horizontal_spacing=0.04 if cols > 1 else 0.0, vertical_spacing=spacing, shared_yaxes=True)
    shown: set[str] = set()
    biggest = 1
    for i, (label, rows) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        total = sum(int(r.get("params") or 0) for r in rows)
        biggest = max([biggest] + [int(r.get("params") or 0) for r in rows])
        for frozen, name, color in ((False, TRAINABLE_LABEL, TRAINABLE_COLOR), (True, FROZEN_LABEL, FROZEN_COLOR)):
            part = [r for r in rows if _is_frozen(r.get("frozen")) == frozen and int(r.get("params") or 0) > 0]
            if not part:
                continue
            params = [int(r["params"]) for r in part]
            fig.add_trace(go.Bar(
                x=[str(r["group"]) for r in part], y=params, name=name, legendgroup=name,
                showlegend=name not in shown,
                marker={"color": color, "line": {"width": 0}},
                customdata=[[label, f"{p:,}", "frozen" if frozen else "trainable", f"{p / total:.2%}" if total else "—"]
                            for p in params],
                hovertemplate="<b>%{x}</b> (%{customdata[0]})<br>%{customdata[2]}<br>"
                              "%{customdata[1]} parameters (%{customdata[3]})<extra></extra>",
            ), row=row, col=col)
            shown.add(name)
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=[str(r["group"]) for r in rows],
                         row=row, col=col)
    fig.update_layout(barmode="overlay", bargap=0.2)
    fig.update_xaxes(tickangle=-60, tickfont={"size": 9})
    fig.update_yaxes(type="log", range=[0, math.log10(max(biggest, 10)) + 0.3])
    fig.update_yaxes(title_text="parameters", col=1)
    fig.update_annotations(font_size=12)
    legend = [name for name in (TRAINABLE_LABEL, FROZEN_LABEL) if name in shown]
    return _style(fig, title, "bar height: parameters (log scale)", height=height,
                  legend_labels=legend, panel_titles=True)
