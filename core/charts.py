"""Plotly figure builders for the dashboard: pure functions, DataFrames or
lists in, `plotly.graph_objects.Figure` out. No I/O, no Streamlit.

Inputs are shaped like the run store's readers (`Store.runs()`,
`Store.metrics()`, `Store.layer_stats()`) and `LayerPlan.group_table()`.
Every chart colours a run by its strategy (`strategy_color`) and a layer
group by frozen/trainable (`FROZEN_COLOR`, `TRAINABLE_COLOR`), so the same
thing has the same colour on every page. Empty input gives a figure that
says so instead of raising.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# --- colours --------------------------------------------------------------------

SCRATCH_COLOR = "#8C7B70"  # warm grey: the baseline, always the same
STRATEGY_COLORS: dict[str, str] = {
    "feature_extraction": "#1F6FB2",  # blue
    "partial": "#1A9E77",  # teal green
    "full": "#7B3FA0",  # purple
    "discriminative": "#D1478F",  # magenta
    "gradual": "#C0392B",  # brick red
    "scratch": SCRATCH_COLOR,
}
_EXTRA_COLORS = ("#2C7FB8", "#7FBC41", "#E7298A", "#66A61E", "#A6761D", "#1B9E77", "#5E4FA2")
UNKNOWN_COLOR = "#9E9E9E"

FROZEN_COLOR = "#5B6C86"  # slate blue-grey
TRAINABLE_COLOR = "#F28E2B"  # orange
FROZEN_LABEL = "🔒 frozen"
TRAINABLE_LABEL = "trainable"

_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "pentagon", "hexagon")

HEIGHT = 340
NO_DATA = "No data yet"


def strategy_color(strategy: str | None) -> str:
    """The colour of a strategy on every chart: scratch is always warm grey,
    each transfer strategy has its own fixed colour; an unknown name gets a
    stable colour from its spelling."""
    if not strategy:
        return UNKNOWN_COLOR
    if strategy in STRATEGY_COLORS:
        return STRATEGY_COLORS[strategy]
    return _EXTRA_COLORS[zlib.crc32(str(strategy).encode()) % len(_EXTRA_COLORS)]


def _get(row: Any, key: str, default: Any = None) -> Any:
    if isinstance(row, Mapping):
        value = row.get(key, default)
    elif isinstance(row, pd.Series):
        value = row.get(key, default)
    else:
        value = getattr(row, key, default)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value


def _config_value(row: Any, key: str) -> Any:
    value = _get(row, key)
    if value is not None:
        return value
    cfg = _get(row, "config")
    if isinstance(cfg, str):
        try:
            cfg = json.loads(cfg)
        except ValueError:
            cfg = None
    return cfg.get(key) if isinstance(cfg, dict) else None


def run_label(row: Any) -> str:
    """'full · efficientnet_lite0' for a row of `Store.runs()` (a Series, a
    dict, or an itertuples row); the run's name, when it has one, follows in
    parentheses."""
    strategy = _config_value(row, "strategy")
    backbone = _config_value(row, "backbone")
    parts = [str(p) for p in (strategy, backbone) if p]
    label = " · ".join(parts) or str(_get(row, "id", "run"))
    name = _get(row, "name")
    if name:
        label += f" ({name})"
    return label


@dataclass(frozen=True)
class _RunStyle:
    label: str
    color: str
    symbol: str
    strategy: str | None


def _run_styles(runs: pd.DataFrame | None, run_ids: Iterable[str] = ()) -> dict[str, _RunStyle]:
    """Run id -> label, colour and marker, in the order of `runs` (then any
    other id seen in the metrics). Repeated labels get the run id's tail;
    runs sharing a strategy colour differ by marker symbol."""
    rows: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    if runs is not None and not runs.empty and "id" in runs:
        for _, r in runs.iterrows():
            rid = str(r["id"])
            if rid not in seen:
                seen.add(rid)
                rows.append((rid, run_label(r), _config_value(r, "strategy")))
    for rid in run_ids:
        rid = str(rid)
        if rid not in seen:
            seen.add(rid)
            rows.append((rid, rid, None))
    counts: dict[str, int] = {}
    for _, label, _ in rows:
        counts[label] = counts.get(label, 0) + 1
    per_color: dict[str, int] = {}
    out = {}
    for rid, label, strategy in rows:
        if counts[label] > 1:
            label = f"{label} · {rid[-6:]}"
        color = strategy_color(strategy)
        n = per_color.get(color, 0)
        per_color[color] = n + 1
        out[rid] = _RunStyle(label, color, _SYMBOLS[n % len(_SYMBOLS)], strategy)
    return out


# --- layout helpers ----------------------------------------------------------------


def _human(n: float) -> str:
    """12_810 -> '12.8k', 4_007_548 -> '4.0M'."""
    n = float(n)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{suffix}" if v >= 100 else f"{v:.1f}{suffix}"
    return f"{n:.0f}"


def _pct(x: float) -> str:
    if x == 0 or x >= 0.001 or x == 1:
        return f"{x:.1%}"
    return f"{x:.2%}"


def _legend_rows(legend_labels: list[str]) -> int:
    """Rows a horizontal legend takes; it wraps at about 620 px on a laptop column."""
    if not legend_labels:
        return 0
    width = sum(40 + 7 * len(s) for s in legend_labels)
    return max(1, math.ceil(width / 620))


def _style(fig: go.Figure, title: str | None = None, subtitle: str | None = None, height: int = HEIGHT,
           legend_labels: list[str] | None = None, panel_titles: bool = False) -> go.Figure:
    """The house style: plotly_white, compact, title and subtitle at the top
    left, then the legend in a row (or a few) of its own, then the plot. The
    legend is placed in pixels below the title, so it never covers the title
    nor the panels' own titles."""
    legend_labels = legend_labels or []
    pad = 6
    title_px = (26 if title else 0) + (18 if subtitle else 0)
    legend_px = 22 * _legend_rows(legend_labels)
    top = pad + title_px + legend_px + (22 if panel_titles else 0) + 8
    title_layout: dict = {"text": title or "", "x": 0.01, "xanchor": "left", "y": 1 - pad / height, "yanchor": "top",
                          "yref": "container", "font": {"size": 15}}
    if subtitle:
        title_layout["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#555"}}
    fig.update_layout(
        template="plotly_white",
        height=height,
        title=title_layout,
        margin={"l": 8, "r": 8, "t": top, "b": 8},
        showlegend=bool(legend_labels),
        legend={"orientation": "h", "yref": "container", "y": 1 - (pad + title_px + 2) / height, "yanchor": "top",
                "xanchor": "left", "x": 0, "font": {"size": 11}, "title": {"text": ""}},
        font={"size": 12},
        hoverlabel={"namelength": -1},
    )
    return fig


def empty_figure(message: str = NO_DATA, title: str | None = None, height: int = HEIGHT) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 14, "color": "#777"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, title, height=height)


def _is_empty(df: Any, *columns: str) -> bool:
    if df is None or not isinstance(df, pd.DataFrame) or df.empty:
        return True
    return any(c not in df.columns for c in columns)


def _records(groups: Any) -> list[dict]:
    if groups is None:
        return []
    if isinstance(groups, pd.DataFrame):
        return groups.to_dict("records")
    return [dict(g) for g in groups]


def _is_frozen(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def _lr_text(lr: Any, frozen: bool) -> str:
    if frozen:
        return "— (frozen)"
    try:
        return f"{float(lr):.3g}"
    except (TypeError, ValueError):
        return "—"


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
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("weight change ‖W−W₀‖ / ‖W₀‖", "gradient norm (mean per step)"))
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
            fig.add_trace(go.Bar(
                x=[str(g) for g in sub["group"]],
                y=list(values),
                name=name,
                legendgroup=name,
                showlegend=col == 1,
                marker={"color": color, "line": {"width": 0}},
                text=["🔒" if frozen else f"{v:.2g}" if pd.notna(v) else "" for v in values],
                textposition="outside",
                cliponaxis=False,
                customdata=custom,
                hovertemplate=f"<b>%{{x}}</b> ({'frozen' if frozen else 'trainable'})<br>"
                              f"{'weight change' if col == 1 else 'gradient norm'} %{{y:.3g}}"
                              "<br>%{customdata[0]} parameters<br>learning rate %{customdata[1]}<extra></extra>",
            ), row=1, col=col)
    fig.update_layout(barmode="overlay", bargap=0.25)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, tickangle=-45)
    if log_y:
        fig.update_yaxes(type="log")
    else:
        fig.update_yaxes(rangemode="tozero")
    fig.update_annotations(font_size=12)
    return _style(fig, title, f"epoch {epoch}", legend_labels=labels, panel_titles=True)


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
    df = stats.copy()
    df["trainable"] = (~df["frozen"].map(_is_frozen)).astype(float)
    if "position" in df:
        order = list(df.sort_values(["position", "epoch"], kind="stable").drop_duplicates("group")["group"].astype(str))
    else:
        order = list(dict.fromkeys(df["group"].astype(str)))
    epochs = sorted(int(e) for e in df["epoch"].dropna().unique())
    df["group"] = df["group"].astype(str)
    state = df.pivot_table(index="group", columns="epoch", values="trainable", aggfunc="last").reindex(index=order, columns=epochs)
    if value in df and value != "frozen":
        z = df.pivot_table(index="group", columns="epoch", values=value, aggfunc="last").reindex(index=order, columns=epochs)
    else:
        z = state
    change = (df.pivot_table(index="group", columns="epoch", values="weight_change", aggfunc="last")
              .reindex(index=order, columns=epochs) if "weight_change" in df else state * np.nan)
    status = [["" if pd.isna(s) else "trainable" if s else "frozen" for s in row] for row in state.to_numpy()]
    custom = np.dstack([np.array(status, dtype=object),
                        np.array([["—" if pd.isna(c) else f"{c:.3g}" for c in row] for row in change.to_numpy()], dtype=object)])
    heat: dict = {
        "x": epochs, "y": order, "z": z.to_numpy(dtype=float), "customdata": custom, "xgap": 2, "ygap": 2,
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
        for g, row in zip(order, state.to_numpy()):
            first = next((e for e, s in zip(epochs, row) if s == 1), None)
            if first is not None and first > epochs[0]:
                thawed.append((first, g))
        thawed.sort(key=lambda t: t[0])  # stable: forward order within an epoch
        subtitle = ("thawed: " + ", ".join(f"{g} at epoch {e}" for e, g in thawed)) if thawed else "orange: trainable, slate: frozen"
    else:
        heat.update(colorscale="Oranges", showscale=True, colorbar={"thickness": 10, "len": 0.9})
        subtitle = "||W−W₀|| / ||W₀||" if value == "weight_change" else "gradient norm"
    fig = go.Figure(go.Heatmap(**heat))
    fig.update_xaxes(title_text="epoch", type="category" if len(epochs) == 1 else "linear",
                     **({"tickmode": "array", "tickvals": epochs} if len(epochs) <= 15 else {}))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=order, autorange="reversed")
    height = min(420, max(240, 90 + 22 * len(order)))
    return _style(fig, title, subtitle, height=height)


# --- runs over epochs -----------------------------------------------------------------

_METRIC_TITLES = {
    "val_accuracy": "validation accuracy", "train_accuracy": "training accuracy",
    "val_loss": "validation loss", "train_loss": "training loss",
    "images_per_second": "images per second", "seconds": "seconds per epoch",
}


def _metric_title(metric: str) -> str:
    return _METRIC_TITLES.get(metric, metric.replace("_", " "))


def _sorted_runs(metrics: pd.DataFrame, runs: pd.DataFrame | None, order_col: str) -> tuple[dict[str, _RunStyle], list[tuple[str, pd.DataFrame]]]:
    styles = _run_styles(runs, metrics["run_id"].astype(str).unique())
    grouped = {str(k): g.sort_values(order_col, kind="stable") for k, g in metrics.groupby(metrics["run_id"].astype(str), sort=False)}
    return styles, [(rid, grouped[rid]) for rid in styles if rid in grouped]


def _accuracy_range(values) -> list[float]:
    """From a round 10% below the lowest accuracy shown (never below 0) to
    just above 100%: differences between good runs stay visible."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    low = math.floor((v.min() - 0.02) * 10) / 10 if len(v) else 0.0
    return [max(0.0, min(low, 0.9)), 1.02]


def _accuracy_axis(metric: str, values=()) -> dict:
    return {"range": _accuracy_range(values), "tickformat": ".0%"} if "accuracy" in metric else {}


def epoch_curves(metrics: pd.DataFrame, runs: pd.DataFrame, metric: str = "val_accuracy", train: bool = False) -> go.Figure:
    """One line per run of `metric` by epoch, coloured by strategy. With
    `train`, the matching training metric follows as a dashed line
    (val_accuracy -> train_accuracy). Accuracy axes run 0 to 1."""
    title = _metric_title(metric).capitalize()
    if _is_empty(metrics, "run_id", "epoch", metric):
        return empty_figure(NO_DATA, title)
    styles, series = _sorted_runs(metrics, runs, "epoch")
    partner = metric.replace("val_", "train_", 1) if train and metric.startswith("val_") else None
    fig = go.Figure()
    for rid, g in series:
        s = styles[rid]
        for key, dash, suffix in ((metric, "solid", ""), (partner, "dash", " (train)")):
            if key is None or key not in g:
                continue
            fig.add_trace(go.Scatter(
                x=g["epoch"], y=g[key], mode="lines+markers", name=s.label + suffix,
                legendgroup=rid, showlegend=not suffix,
                line={"color": s.color, "dash": dash, "width": 2.2 if not suffix else 1.6},
                marker={"symbol": s.symbol, "size": 6, "color": s.color},
                hovertemplate=f"<b>{s.label}</b>{suffix}<br>epoch %{{x}}<br>{_metric_title(key)} %{{y:.4g}}<extra></extra>",
            ))
    fig.update_xaxes(title_text="epoch", tickformat="d", dtick=_epoch_dtick(metrics))
    shown = pd.concat([metrics[k] for k in (metric, partner) if k is not None and k in metrics])
    fig.update_yaxes(title_text=_metric_title(metric), **_accuracy_axis(metric, shown))
    subtitle = "dashed: training" if partner else None
    return _style(fig, title, subtitle, legend_labels=[styles[rid].label for rid, _ in series])


def _epoch_dtick(metrics: pd.DataFrame) -> int | None:
    top = pd.to_numeric(metrics["epoch"], errors="coerce").max()
    return 1 if pd.notna(top) and top <= 12 else None


def curves_grid(metrics: pd.DataFrame, runs: pd.DataFrame) -> go.Figure:
    """Four panels: training and validation loss (top), training and
    validation accuracy (bottom); one line per run in every panel, dashed
    for training metrics, one legend entry per run."""
    title = "Learning curves"
    panels = (("train_loss", 1, 1), ("val_loss", 1, 2), ("train_accuracy", 2, 1), ("val_accuracy", 2, 2))
    if _is_empty(metrics, "run_id", "epoch") or not any(m in metrics for m, _, _ in panels):
        return empty_figure(NO_DATA, title)
    styles, series = _sorted_runs(metrics, runs, "epoch")
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.12, horizontal_spacing=0.08,
                        subplot_titles=[_metric_title(m) for m, _, _ in panels])
    for rid, g in series:
        s = styles[rid]
        first = True
        for metric, row, col in panels:
            if metric not in g:
                continue
            train = metric.startswith("train_")
            fig.add_trace(go.Scatter(
                x=g["epoch"], y=g[metric], mode="lines+markers", name=s.label, legendgroup=rid, showlegend=first,
                line={"color": s.color, "dash": "dash" if train else "solid", "width": 1.6 if train else 2.2},
                marker={"symbol": s.symbol, "size": 5, "color": s.color},
                hovertemplate=f"<b>{s.label}</b><br>epoch %{{x}}<br>{_metric_title(metric)} %{{y:.4g}}<extra></extra>",
            ), row=row, col=col)
            first = False
    dtick = _epoch_dtick(metrics)
    fig.update_xaxes(tickformat="d", dtick=dtick)
    fig.update_xaxes(title_text="epoch", row=2)
    acc = pd.concat([metrics[c] for c in ("train_accuracy", "val_accuracy") if c in metrics])
    for row, col in ((2, 1), (2, 2)):
        fig.update_yaxes(range=_accuracy_range(acc), tickformat=".0%", row=row, col=col)
    fig.update_annotations(font_size=12)
    return _style(fig, title, height=480, legend_labels=[styles[rid].label for rid, _ in series], panel_titles=True)


def accuracy_vs_time(metrics: pd.DataFrame, runs: pd.DataFrame) -> go.Figure:
    """Validation accuracy against cumulative training seconds, one line per
    run: what a strategy buys per second of compute."""
    title = "Validation accuracy vs training time"
    if _is_empty(metrics, "run_id", "epoch", "val_accuracy", "seconds"):
        return empty_figure(NO_DATA, title)
    styles, series = _sorted_runs(metrics, runs, "epoch")
    fig = go.Figure()
    for rid, g in series:
        s = styles[rid]
        elapsed = pd.to_numeric(g["seconds"], errors="coerce").fillna(0).cumsum()
        fig.add_trace(go.Scatter(
            x=elapsed, y=g["val_accuracy"], mode="lines+markers", name=s.label, legendgroup=rid,
            line={"color": s.color, "width": 2.2}, marker={"symbol": s.symbol, "size": 6, "color": s.color},
            customdata=g["epoch"],
            hovertemplate=f"<b>{s.label}</b><br>epoch %{{customdata}} after %{{x:.1f}} s<br>"
                          "validation accuracy %{y:.2%}<extra></extra>",
        ))
    fig.update_xaxes(title_text="training time (s)", rangemode="tozero")
    fig.update_yaxes(title_text="validation accuracy", range=_accuracy_range(metrics["val_accuracy"]), tickformat=".0%")
    return _style(fig, title, legend_labels=[styles[rid].label for rid, _ in series])


def time_to_accuracy(metrics: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per run (in the order of `metrics`): the first epoch whose validation
    accuracy reached `threshold` and the training seconds summed up to and
    including it. Columns run_id, reached, epoch (nullable Int64: <NA> when
    never), seconds (NaN when never), best_val_accuracy."""
    columns = ["run_id", "reached", "epoch", "seconds", "best_val_accuracy"]
    if _is_empty(metrics, "run_id", "epoch", "val_accuracy"):
        return pd.DataFrame({"run_id": pd.Series(dtype=object), "reached": pd.Series(dtype=bool),
                             "epoch": pd.Series(dtype="Int64"), "seconds": pd.Series(dtype=float),
                             "best_val_accuracy": pd.Series(dtype=float)})[columns]
    out = []
    for rid, g in metrics.groupby("run_id", sort=False):
        g = g.sort_values("epoch", kind="stable")
        acc = pd.to_numeric(g["val_accuracy"], errors="coerce")
        secs = (pd.to_numeric(g["seconds"], errors="coerce").fillna(0).cumsum() if "seconds" in g
                else pd.Series(np.nan, index=g.index))
        hit = acc >= threshold
        if hit.any():
            i = hit.idxmax()
            out.append((rid, True, int(g.loc[i, "epoch"]), float(secs.loc[i]), float(acc.max())))
        else:
            best = float(acc.max()) if acc.notna().any() else np.nan
            out.append((rid, False, pd.NA, np.nan, best))
    df = pd.DataFrame(out, columns=columns)
    df["epoch"] = df["epoch"].astype("Int64")
    df["seconds"] = df["seconds"].astype(float)
    df["reached"] = df["reached"].astype(bool)
    return df


# --- steps -------------------------------------------------------------------------------


def ema(values: Iterable[float], smoothing: float = 0.9) -> np.ndarray:
    """Exponential moving average with start-up bias correction (as
    TensorBoard smooths): the first point is the first value, not a pull
    towards zero. NaNs are skipped (they keep the previous average)."""
    x = np.asarray(list(values) if not isinstance(values, (np.ndarray, pd.Series)) else values, dtype=float)
    w = min(max(float(smoothing), 0.0), 0.999)
    out = np.empty_like(x)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(x):
        if not math.isnan(v):
            acc = w * acc + (1 - w) * v
            weight = w * weight + (1 - w)
        out[i] = acc / weight if weight > 0 else np.nan
    return out


def downsample_indices(n: int, max_points: int) -> np.ndarray:
    """At most `max_points` evenly spread positions out of `n`, always the
    first and the last."""
    if n <= 0:
        return np.array([], dtype=int)
    max_points = max(2, int(max_points))
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def downsample(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """Rows of `frame` thinned to at most `max_points`, first and last kept."""
    return frame.iloc[downsample_indices(len(frame), max_points)]


def step_loss(steps: pd.DataFrame, runs: pd.DataFrame, smoothing: float = 0.9, max_points: int = 500,
              log_y: bool = False) -> go.Figure:
    """Training loss by step, per run: the raw values faint, their
    EMA-smoothed curve bold. Smoothing happens on the full series; each drawn
    series is then thinned to at most `max_points` (first and last kept).
    Input: `Store.metrics(ids, "step")`."""
    title = "Training loss by step"
    if _is_empty(steps, "run_id", "step", "loss"):
        return empty_figure(NO_DATA, title)
    styles, series = _sorted_runs(steps, runs, "step")
    fig = go.Figure()
    for rid, g in series:
        s = styles[rid]
        g = g.assign(smooth=ema(pd.to_numeric(g["loss"], errors="coerce"), smoothing))
        shown = downsample(g, max_points)
        epoch = shown["epoch"] if "epoch" in shown else shown["step"] * 0
        fig.add_trace(go.Scatter(
            x=shown["step"], y=shown["loss"], mode="lines", name=f"{s.label} (raw)", legendgroup=rid,
            showlegend=False, opacity=0.3, line={"color": s.color, "width": 1},
            customdata=epoch, hovertemplate=f"{s.label}<br>step %{{x}} (epoch %{{customdata}})<br>loss %{{y:.4g}}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(
            x=shown["step"], y=shown["smooth"], mode="lines", name=s.label, legendgroup=rid,
            line={"color": s.color, "width": 2.4},
            customdata=epoch, hovertemplate=f"<b>{s.label}</b><br>step %{{x}} (epoch %{{customdata}})<br>"
                                            "smoothed loss %{y:.4g}<extra></extra>",
        ))
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(title_text="training loss", **({"type": "log"} if log_y else {"rangemode": "tozero"}))
    subtitle = f"faint: raw, bold: smoothed (EMA {min(max(smoothing, 0), 0.999):g})"
    return _style(fig, title, subtitle, legend_labels=[styles[rid].label for rid, _ in series])


def lr_curve(steps: pd.DataFrame, runs: pd.DataFrame, max_points: int = 500) -> go.Figure:
    """The head's learning rate by step, per run (warm-up then cosine)."""
    title = "Learning rate by step"
    if _is_empty(steps, "run_id", "step", "lr"):
        return empty_figure(NO_DATA, title)
    styles, series = _sorted_runs(steps, runs, "step")
    fig = go.Figure()
    for rid, g in series:
        s = styles[rid]
        shown = downsample(g, max_points)
        fig.add_trace(go.Scatter(
            x=shown["step"], y=shown["lr"], mode="lines", name=s.label, legendgroup=rid,
            line={"color": s.color, "width": 2},
            hovertemplate=f"<b>{s.label}</b><br>step %{{x}}<br>learning rate %{{y:.3g}}<extra></extra>",
        ))
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(title_text="learning rate (head)", exponentformat="e", rangemode="tozero")
    return _style(fig, title, legend_labels=[styles[rid].label for rid, _ in series])


# --- results -------------------------------------------------------------------------------


def test_accuracy_bars(runs: pd.DataFrame) -> go.Figure:
    """Final test accuracy per run, best on top, coloured by strategy (one
    legend entry per strategy), each bar labelled with its value. Runs
    without a test accuracy (still training, failed) are left out."""
    title = "Test accuracy"
    if _is_empty(runs, "id", "test_accuracy"):
        return empty_figure("No finished run with a test accuracy yet", title)
    done = runs[pd.to_numeric(runs["test_accuracy"], errors="coerce").notna()]
    if done.empty:
        return empty_figure("No finished run with a test accuracy yet", title)
    styles = _run_styles(done)
    done = done.assign(_acc=pd.to_numeric(done["test_accuracy"]), _label=[styles[str(i)].label for i in done["id"]],
                       _strategy=[styles[str(i)].strategy for i in done["id"]])
    done = done.sort_values("_acc", ascending=False, kind="stable")
    fig = go.Figure()
    strategies = list(dict.fromkeys(done["_strategy"]))
    for strategy in strategies:
        part = done[done["_strategy"].map(lambda s: s == strategy)]
        fig.add_trace(go.Bar(
            y=part["_label"], x=part["_acc"], orientation="h", name=str(strategy or "unknown"),
            marker={"color": strategy_color(strategy), "line": {"width": 0}},
            text=[f"{a:.1%}" for a in part["_acc"]], textposition="outside", cliponaxis=False,
            hovertemplate="<b>%{y}</b><br>test accuracy %{x:.2%}<extra></extra>",
        ))
    fig.update_layout(barmode="overlay", bargap=0.3)
    fig.update_xaxes(range=[0, 1.12], tickformat=".0%", title_text="test accuracy", tickvals=[0, 0.25, 0.5, 0.75, 1])
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(done["_label"]), autorange="reversed")
    height = min(380, max(220, 110 + 30 * len(done)))
    return _style(fig, title, height=height, legend_labels=[str(s or "unknown") for s in strategies])


def topk_bars(preds: list[tuple[str, float]], title: str = "Top predictions") -> go.Figure:
    """Horizontal bars of the top-k class probabilities, the most likely on
    top and highlighted."""
    if not preds:
        return empty_figure("No prediction yet", title, height=220)
    names = [str(n) for n, _ in preds]
    probs = [float(p) for _, p in preds]
    colors = [TRAINABLE_COLOR if i == 0 else "#C9CED6" for i in range(len(preds))]
    fig = go.Figure(go.Bar(
        y=names, x=probs, orientation="h", marker={"color": colors, "line": {"width": 0}},
        text=[f"{p:.1%}" for p in probs], textposition="outside", cliponaxis=False, showlegend=False,
        hovertemplate="<b>%{y}</b><br>probability %{x:.2%}<extra></extra>",
    ))
    fig.update_xaxes(range=[0, 1.15], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1], title_text="probability")
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=names, autorange="reversed")
    height = min(380, max(200, 90 + 32 * len(preds)))
    return _style(fig, title, height=height)


test_accuracy_bars.__test__ = False  # a chart, not a pytest test, wherever it is imported by name
