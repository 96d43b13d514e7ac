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

import html
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.train import strategies
from core.train.config import RunConfig

# --- colours --------------------------------------------------------------------

# Each strategy carries its own colour (core.train.strategies); these are the
# registry's as they stand at import, for figures and tests that compare against them.
SCRATCH_COLOR = strategies.baseline().colour
STRATEGY_COLORS: dict[str, str] = {s.name: s.colour for s in strategies.REGISTRY.values()}
_EXTRA_COLORS = ("#2C7FB8", "#7FBC41", "#E7298A", "#66A61E", "#A6761D", "#1B9E77", "#5E4FA2")
UNKNOWN_COLOR = "#9E9E9E"

FROZEN_COLOR = "#5B6C86"  # slate blue-grey
TRAINABLE_COLOR = "#F28E2B"  # orange
FROZEN_LABEL = "🔒 frozen"
TRAINABLE_LABEL = "trainable"

_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "pentagon", "hexagon")

HEIGHT = 340
# The house template, built and validated once. Assigning the name
# "plotly_white" makes plotly deep-copy and re-validate the whole template for
# every figure (about 10 ms each: a sixth of a Live refresh with 20 runs).
_TEMPLATE = go.layout.Template(go.Figure(layout={"template": "plotly_white"}).layout.template)


def _fast_scatter(**props) -> go.Scatter:
    """A `go.Scatter` from the builders' own, known-good properties, without
    plotly's per-property validation: the multi-run charts draw a hundred
    traces per refresh, and checking each costs more than drawing it. The
    JSON sent to the browser is the same (tests/test_charts.py checks it)."""
    arrays = {k: v.to_numpy() for k, v in props.items() if isinstance(v, (pd.Series, pd.Index))}
    return go.Scatter(**{**props, **arrays}, _validate=False)


def _unchecked(fig: go.Figure) -> go.Figure:
    """`fig`, set to take traces without validating them again (add_trace
    re-checks every property of every trace by default)."""
    fig._validate = False
    return fig
NO_DATA = "No data yet"


def strategy_color(strategy: str | None) -> str:
    """The colour of a strategy on every chart: scratch is always warm grey,
    each transfer strategy has its own fixed colour; an unknown name gets a
    stable colour from its spelling."""
    if not strategy:
        return UNKNOWN_COLOR
    if strategy in strategies.REGISTRY:
        return strategies.REGISTRY[strategy].colour
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


def plain(text: Any) -> str:
    """A person's text (a run or class name) for a figure: plotly reads <b>, <a href>
    and entities in labels, so they are escaped and show as typed."""
    return html.escape(str(text), quote=False)


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
        label += f" ({plain(name)})"
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
    validate = fig.layout._validate
    fig.layout._validate = False  # a shared, already valid template: no copy, no re-check
    fig.layout.template = _TEMPLATE
    fig.layout._validate = validate
    fig.update_layout(
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
    fig = _unchecked(make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.12, horizontal_spacing=0.08,
                        subplot_titles=[_metric_title(m) for m, _, _ in panels]))
    traces, rows, cols = [], [], []
    for rid, g in series:
        s = styles[rid]
        first = True
        for metric, row, col in panels:
            if metric not in g:
                continue
            train = metric.startswith("train_")
            traces.append(_fast_scatter(
                x=g["epoch"], y=g[metric], mode="lines+markers", name=s.label, legendgroup=rid, showlegend=first,
                line={"color": s.color, "dash": "dash" if train else "solid", "width": 1.6 if train else 2.2},
                marker={"symbol": s.symbol, "size": 5, "color": s.color},
                hovertemplate=f"<b>{s.label}</b><br>epoch %{{x}}<br>{_metric_title(metric)} %{{y:.4g}}<extra></extra>",
            ))
            rows.append(row)
            cols.append(col)
            first = False
    fig.add_traces(traces, rows=rows, cols=cols)  # one call: each add_trace walks the figure again
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
    fig = _unchecked(go.Figure())
    for rid, g in series:
        s = styles[rid]
        g = g.assign(smooth=ema(pd.to_numeric(g["loss"], errors="coerce"), smoothing))
        shown = downsample(g, max_points)
        epoch = shown["epoch"] if "epoch" in shown else shown["step"] * 0
        fig.add_trace(_fast_scatter(
            x=shown["step"], y=shown["loss"], mode="lines", name=f"{s.label} (raw)", legendgroup=rid,
            showlegend=False, opacity=0.3, line={"color": s.color, "width": 1},
            customdata=epoch, hovertemplate=f"{s.label}<br>step %{{x}} (epoch %{{customdata}})<br>loss %{{y:.4g}}<extra></extra>",
        ))
        fig.add_trace(_fast_scatter(
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
    fig = _unchecked(go.Figure())
    for rid, g in series:
        s = styles[rid]
        shown = downsample(g, max_points)
        fig.add_trace(_fast_scatter(
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
    names = [plain(n) for n, _ in preds]
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


# --- trade-offs, strategy races, sample efficiency, distillation -----------------------

KD_COLOR = "#D4A20B"  # mustard gold: a student taught by a teacher (knowledge distillation)
STUDENT_COLOR = "#B3AAA2"  # light warm grey: the student trained alone, a baseline like scratch
ROLE_NAMES = {"teacher": "teacher", "student_kd": "student + KD", "student": "student alone"}
_ROLE_ORDER = ("teacher", "student_kd", "student")


def _number(value: Any) -> float | None:
    """A finite float, or None (None, NaN, '', text)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _log_range(values: Iterable[float], pad: float = 0.35) -> list[float]:
    """A log axis range (in log10 units) around positive `values`, padded so
    markers and their labels are not cut at the edges."""
    logs = [math.log10(v) for v in values if v and v > 0]
    if not logs:
        return [0, 1]
    return [min(logs) - pad, max(logs) + pad]


def accuracy_vs_params(runs: pd.DataFrame) -> go.Figure:
    """Final test accuracy against the number of trainable parameters (log
    axis), one marker per finished run, coloured by strategy (one legend
    entry per strategy) and labelled with the strategy's name: what each
    strategy buys per trained parameter. Runs without a test accuracy or a
    positive trainable-parameter count are left out. Columns: id, strategy,
    backbone, test_accuracy, trainable_params (a `Store.runs()` frame with
    the results' trainable_params joined in)."""
    title = "Accuracy vs trainable parameters"
    message = "No finished run with a test accuracy yet"
    if _is_empty(runs, "test_accuracy", "trainable_params"):
        return empty_figure(message, title)
    acc = pd.to_numeric(runs["test_accuracy"], errors="coerce")
    params = pd.to_numeric(runs["trainable_params"], errors="coerce")
    keep = acc.notna() & params.notna() & (params > 0)
    done = runs[keep].assign(_acc=acc[keep], _params=params[keep])
    if done.empty:
        return empty_figure(message, title)
    if "id" not in done:
        done = done.assign(id=[f"run {i + 1}" for i in range(len(done))])
    styles = _run_styles(done)
    done = done.assign(_strategy=[_config_value(r, "strategy") for _, r in done.iterrows()],
                       _label=[styles[str(i)].label for i in done["id"]],
                       _symbol=[styles[str(i)].symbol for i in done["id"]])
    strategies = list(dict.fromkeys(done["_strategy"]))
    fig = go.Figure()
    for strategy in strategies:
        part = done[done["_strategy"].map(lambda s: s == strategy)]
        name = str(strategy or "unknown")
        fig.add_trace(go.Scatter(
            x=list(part["_params"]), y=list(part["_acc"]), mode="markers+text", name=name,
            marker={"color": strategy_color(strategy), "size": 11, "symbol": list(part["_symbol"]),
                    "line": {"width": 1, "color": "white"}},
            text=[name] * len(part), textposition="top center", textfont={"size": 11, "color": strategy_color(strategy)},
            cliponaxis=False,
            customdata=[[label, f"{int(p):,}", _human(p)] for label, p in zip(part["_label"], part["_params"])],
            hovertemplate="<b>%{customdata[0]}</b><br>test accuracy %{y:.2%}<br>"
                          "%{customdata[1]} trainable parameters (%{customdata[2]})<extra></extra>",
        ))
    fig.update_xaxes(type="log", title_text="trainable parameters (log)", range=_log_range(done["_params"]))
    fig.update_yaxes(title_text="test accuracy", range=_accuracy_range(done["_acc"]), tickformat=".0%")
    return _style(fig, title, "up and to the left: more accuracy from fewer trained parameters",
                  legend_labels=[str(s or "unknown") for s in strategies])


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


def _is_all_labels(value: Any) -> bool:
    """labels_per_class meaning 'every training image': None, NaN, 'all',
    or anything else that is not a positive number."""
    v = _number(value)
    return v is None or v <= 0


def labels_curve(summary: pd.DataFrame) -> go.Figure:
    """Sample efficiency: mean test accuracy (± std as error bars) against
    labels per class on a log axis, one line per strategy coloured by
    strategy, the number of runs behind each point in the hover. "All
    labels" (labels_per_class None, NaN or "all") sits at the right end,
    ticked "all": at the dataset's largest labels-per-class (column
    `labels_value`) when given and beyond every numeric point, else at twice
    the largest numeric value. Columns: strategy, labels_per_class, mean,
    std, n (labels_value optional)."""
    title = "Test accuracy vs labels per class"
    if _is_empty(summary, "strategy", "labels_per_class", "mean"):
        return empty_figure("No results to compare yet", title)
    df = summary.assign(_mean=pd.to_numeric(summary["mean"], errors="coerce"))
    df = df[df["_mean"].notna()]
    if df.empty:
        return empty_figure("No results to compare yet", title)
    is_all = [_is_all_labels(v) for v in df["labels_per_class"]]
    numeric = sorted({_number(v) for v, a in zip(df["labels_per_class"], is_all) if not a})
    top = max(numeric) if numeric else None
    all_x = None
    if any(is_all):
        given = [_number(v) for v, a in zip(df["labels_value"], is_all) if a] if "labels_value" in df else []
        given = [v for v in given if v is not None and v > 0]
        if given and (top is None or max(given) > top):
            all_x = max(given)
        else:
            all_x = 2 * top if top else 1.0
    df = df.assign(_x=[all_x if a else _number(v) for v, a in zip(df["labels_per_class"], is_all)], _all=is_all,
                   _std=pd.to_numeric(df["std"], errors="coerce").fillna(0.0) if "std" in df else 0.0,
                   _n=df["n"] if "n" in df else pd.NA)
    strategies = list(dict.fromkeys(df["strategy"]))
    fig = go.Figure()
    for strategy in strategies:
        part = df[df["strategy"].map(lambda s: s == strategy)].sort_values("_x", kind="stable")
        color = strategy_color(strategy)
        custom = [["all" if a else f"{x:g}", f"{s:.1%}", "—" if pd.isna(n) else f"{int(n)}"]
                  for a, x, s, n in zip(part["_all"], part["_x"], part["_std"], part["_n"])]
        fig.add_trace(go.Scatter(
            x=list(part["_x"]), y=list(part["_mean"]), mode="lines+markers", name=str(strategy or "unknown"),
            line={"color": color, "width": 2.2}, marker={"color": color, "size": 7},
            error_y={"type": "data", "array": list(part["_std"]), "visible": True, "color": color,
                     "thickness": 1.2, "width": 4},
            customdata=custom,
            hovertemplate=f"<b>{strategy or 'unknown'}</b><br>%{{customdata[0]}} labels per class<br>"
                          "test accuracy %{y:.2%} ± %{customdata[1]}<br>n = %{customdata[2]} runs<extra></extra>",
        ))
    ticks = numeric + ([all_x] if all_x is not None else [])
    text = [f"{v:g}" for v in numeric] + (["all"] if all_x is not None else [])
    fig.update_xaxes(type="log", title_text="labels per class (log scale)", tickmode="array", tickvals=ticks,
                     ticktext=text, range=_log_range(ticks, pad=0.12))
    low = (df["_mean"] - df["_std"]).clip(lower=0)
    fig.update_yaxes(title_text="mean test accuracy", range=_accuracy_range(low), tickformat=".0%")
    return _style(fig, title, "mean ± std over seeds", legend_labels=[str(s or "unknown") for s in strategies])


def _teacher_color(row: Mapping) -> str:
    """The teacher's strategy colour: from its `strategy`, else the first
    part of a run label ('full · efficientnet_lite0'); the default strategy's when
    neither says."""
    strategy = row.get("strategy")
    if not strategy:
        head = str(row.get("label") or "").split(" · ")[0].strip()
        strategy = head if head in strategies.REGISTRY else RunConfig().strategy
    return strategy_color(strategy)


def role_color(row: Mapping) -> str:
    """The colour of a model in a distillation comparison, by its role."""
    role = row.get("role")
    if role == "teacher":
        return _teacher_color(row)
    if role == "student_kd":
        return KD_COLOR
    if role == "student":
        return STUDENT_COLOR
    return UNKNOWN_COLOR


def distill_comparison(rows: list[dict]) -> go.Figure:
    """Teacher vs student taught with knowledge distillation vs the same
    student trained alone: three small bar panels side by side, test
    accuracy, parameters (log axis) and CPU latency per image (ms), model
    size (MB) in every hover. Bars coloured by role: the teacher in its
    strategy's colour, "student + KD" in `KD_COLOR`, "student alone" in a
    light warm grey. Each row: role ("teacher" | "student_kd" | "student"),
    label, test_accuracy, params, model_mb, latency_ms (strategy optional)."""
    title = "Teacher vs student"
    items = [dict(r) for r in (rows or []) if r]
    if not items:
        return empty_figure("No teacher or student to compare yet", title)
    rank = {r: i for i, r in enumerate(_ROLE_ORDER)}
    items.sort(key=lambda r: rank.get(r.get("role"), len(rank)))
    panels = (("test_accuracy", "test accuracy"), ("params", "parameters (log)"), ("latency_ms", "CPU latency per image (ms)"))
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=[t for _, t in panels])
    names: list[str] = []
    for i, r in enumerate(items):
        role = str(r.get("role") or "")
        role_name = ROLE_NAMES.get(role, role or "model")
        label = plain(r.get("label") or "")
        name = f"{role_name}: {label}" if label else role_name
        names.append(name)
        values = {key: _number(r.get(key)) for key, _ in panels}
        mb = _number(r.get("model_mb"))
        acc = values["test_accuracy"]
        params = values["params"]
        custom = [[name, "—" if acc is None else f"{acc:.2%}", "—" if params is None else f"{int(params):,}",
                   "—" if mb is None else f"{mb:.1f} MB",
                   "—" if values["latency_ms"] is None else f"{values['latency_ms']:.2f} ms"]]
        texts = {"test_accuracy": "" if acc is None else f"{acc:.1%}",
                 "params": "" if params is None else _human(params),
                 "latency_ms": "" if values["latency_ms"] is None else f"{values['latency_ms']:.1f}"}
        for col, (key, _) in enumerate(panels, 1):
            y = values[key]
            if key == "params" and y is not None and y <= 0:
                y = None
            fig.add_trace(go.Bar(
                x=[name], y=[y], name=name, legendgroup=f"m{i}", showlegend=col == 1,
                marker={"color": role_color(r), "line": {"width": 0}},
                text=[texts[key]], textposition="outside", cliponaxis=False, customdata=custom,
                hovertemplate="<b>%{customdata[0]}</b><br>test accuracy %{customdata[1]}<br>"
                              "%{customdata[2]} parameters<br>size %{customdata[3]}<br>"
                              "CPU latency %{customdata[4]} per image<extra></extra>",
            ), row=1, col=col)
    fig.update_layout(barmode="group", bargap=0.2)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=names, showticklabels=False)
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1], row=1, col=1)
    params = [p for p in (_number(r.get("params")) for r in items) if p and p > 0]
    fig.update_yaxes(type="log", range=[math.log10(min(params)) - 0.5 if params else 0,
                                        math.log10(max(params)) + 0.5 if params else 1], row=1, col=2)
    latencies = [v for v in (_number(r.get("latency_ms")) for r in items) if v is not None]
    fig.update_yaxes(rangemode="tozero", range=[0, max(latencies) * 1.2] if latencies else None, row=1, col=3)
    fig.update_annotations(font_size=12)
    return _style(fig, title, "model size in the hover", legend_labels=names, panel_titles=True)


# --- seeing inside: confusion matrix, per-class metrics, embeddings, LR finder ----------------

# Ten well-separated qualitative colours (Tableau 10), then more for many classes.
CLASS_COLORS = ("#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7",
                "#9C755F", "#BAB0AC", "#1F77B4", "#2CA02C", "#9467BD", "#8C564B", "#17BECF", "#BCBD22")


def class_color(i: int) -> str:
    return CLASS_COLORS[i % len(CLASS_COLORS)]


def confusion_heatmap(cm: np.ndarray | list, class_names: list[str], normalised: bool = False,
                      title: str | None = "Confusion matrix") -> go.Figure:
    """Rows: true class, columns: predicted class. Counts, or each row
    divided by its total (the diagonal is then per-class recall). Every cell
    is written in; the diagonal reads top left to bottom right."""
    counts = np.asarray(cm, dtype=np.int64)
    if counts.size == 0:
        return empty_figure("No test images", title)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    z = share if normalised else counts
    names = [plain(c) for c in class_names]
    k = len(names)
    text = [[(f"{share[i, j]:.0%}" if normalised else f"{counts[i, j]}") if (counts[i, j] or i == j) else ""
             for j in range(k)] for i in range(k)]
    custom = [[[names[i], names[j], int(counts[i, j]), f"{share[i, j]:.1%}"] for j in range(k)] for i in range(k)]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, colorscale="Blues", zmin=0, zmax=1 if normalised else max(1, int(counts.max())),
        text=text, texttemplate="%{text}" if k <= 20 else None, customdata=custom, xgap=1, ygap=1,
        colorbar={"title": {"text": "share of row" if normalised else "images"}, "thickness": 12,
                  **({"tickformat": ".0%"} if normalised else {})},
        hovertemplate="true <b>%{customdata[0]}</b>, predicted <b>%{customdata[1]}</b><br>"
                      "%{customdata[2]} images (%{customdata[3]} of the true class)<extra></extra>",
    ))
    fig.update_xaxes(title_text="predicted class", type="category", side="bottom", tickangle=0 if k <= 12 else -45)
    fig.update_yaxes(title_text="true class", type="category", autorange="reversed")
    side = min(640, max(300, 120 + 30 * k))
    subtitle = "each row sums to 100%: the diagonal is recall" if normalised else "off the diagonal: the mistakes"
    return _style(fig, title, subtitle, height=side)


def per_class_metric_bars(runs: list[tuple[str, list[dict]]], metric: str = "f1",
                          title: str | None = None) -> go.Figure:
    """One group of bars per class, one bar per run: precision, recall or F1.
    `runs` is [(run label, per-class rows as evaluate.per_class_metrics gives)]."""
    names = {"f1": "F1", "precision": "precision", "recall": "recall"}
    title = title or f"{names.get(metric, metric).capitalize()} per class"
    runs = [(plain(label), rows) for label, rows in runs if rows]
    if not runs:
        return empty_figure("No finished runs to measure", title)
    fig = go.Figure()
    for i, (label, rows) in enumerate(runs):
        fig.add_trace(go.Bar(
            x=[plain(r["class"]) for r in rows], y=[r[metric] for r in rows], name=label,
            marker={"color": _EXTRA_COLORS[i % len(_EXTRA_COLORS)] if i else TRAINABLE_COLOR, "line": {"width": 0}},
            customdata=[[r["precision"], r["recall"], r["f1"], r["support"]] for r in rows],
            hovertemplate=f"<b>{label}</b><br>class %{{x}}<br>precision %{{customdata[0]:.3f}}<br>"
                          "recall %{customdata[1]:.3f}<br>F1 %{customdata[2]:.3f}<br>"
                          "%{customdata[3]} test images<extra></extra>",
        ))
    fig.update_layout(barmode="group", bargap=0.25, bargroupgap=0.05)
    lows = [r[metric] for _, rows in runs for r in rows]
    fig.update_yaxes(range=_accuracy_range(lows), tickformat=".0%", title_text=names.get(metric, metric))
    fig.update_xaxes(type="category", title_text="class")
    return _style(fig, title, legend_labels=[label for label, _ in runs])


def embedding_scatter(xy: np.ndarray, labels: Iterable[int], class_names: list[str],
                      title: str | None = None, subtitle: str | None = None, height: int = 420) -> go.Figure:
    """A 2-D projection of features, one colour per class. Axes carry no
    units (PCA components or t-SNE coordinates), so they have no ticks."""
    xy = np.asarray(xy)
    labels = np.asarray(list(labels))
    if len(xy) == 0:
        return empty_figure("No points to draw", title, height=height)
    fig = go.Figure()
    for c, name in enumerate(class_names):
        sel = labels == c
        if not sel.any():
            continue
        fig.add_trace(go.Scattergl(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=plain(name),
            marker={"color": class_color(c), "size": 6, "opacity": 0.8, "line": {"width": 0}},
            hovertemplate=f"class <b>{plain(name)}</b><extra></extra>",
        ))
    fig.update_xaxes(showticklabels=False, zeroline=False, title_text="")
    fig.update_yaxes(showticklabels=False, zeroline=False, title_text="", scaleanchor="x", scaleratio=1)
    shown = [plain(n) for c, n in enumerate(class_names) if (labels == c).any()]
    return _style(fig, title, subtitle, height=height, legend_labels=shown)


def lr_finder_curve(lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float | None = None,
                    current: float | None = None, title: str | None = "Learning-rate finder") -> go.Figure:
    """Loss against learning rate on a log axis: the raw loss faint, the
    smoothed one bold, the suggestion (steepest descent) and the LR now in
    the form marked. The y axis stops well above the start so the blow-up
    at the end doesn't flatten the useful part."""
    if not lrs:
        return empty_figure("Run the LR finder to see the curve", title)
    lr = np.asarray(lrs, dtype=float)
    raw = np.asarray(losses, dtype=float)
    sm = np.asarray(smoothed, dtype=float)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=lr, y=raw, mode="lines", name="loss", opacity=0.35, line={"color": "#8C7B70", "width": 1},
                             hovertemplate="LR %{x:.2e}<br>loss %{y:.4g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=lr, y=sm, mode="lines", name="smoothed loss", line={"color": "#1F6FB2", "width": 2.6},
                             hovertemplate="LR %{x:.2e}<br>smoothed loss %{y:.4g}<extra></extra>"))
    finite = sm[np.isfinite(sm)]
    lo, start = (float(finite.min()), float(finite[: max(1, len(finite) // 10)].mean())) if len(finite) else (0.0, 1.0)
    y0, y1 = max(0.0, lo - 0.1 * (start - lo + 1e-9)), start + 0.6 * (start - lo + 1e-9)
    fig.update_yaxes(range=[y0, y1])
    # Markers as traces, in data coordinates: layout shapes and annotations
    # would need log10 positions on this axis.
    for value, colour, text, height in ((current, FROZEN_COLOR, "now", 0.9), (suggestion, TRAINABLE_COLOR, "suggested", 0.97)):
        if value:
            fig.add_trace(go.Scatter(
                x=[value, value], y=[y0, y1], mode="lines", name=text, showlegend=False,
                line={"color": colour, "width": 2, "dash": "dash" if text == "now" else "solid"},
                hovertemplate=f"{text}: LR %{{x:.2e}}<extra></extra>"))
            fig.add_trace(go.Scatter(
                x=[value], y=[y0 + height * (y1 - y0)], mode="text", text=[f" {text} {value:.1e}"], showlegend=False,
                textposition="middle right", textfont={"color": colour, "size": 12}, hoverinfo="skip"))
    fig.update_xaxes(type="log", title_text="learning rate (head)", exponentformat="e")
    fig.update_yaxes(title_text="training loss")
    return _style(fig, title, "raw loss faint, smoothed bold; pick where it falls fastest, well before it blows up",
                  legend_labels=["loss", "smoothed loss"])


# --- scaling out: one run over several processes -----------------------------------------


def rank_throughput(ranks: pd.DataFrame, smoothing: float = 0.8, max_points: int = 400) -> go.Figure:
    """Images/s of each process of one run by step (smoothed): a process that
    lags holds all the others back at every gradient all-reduce."""
    title = "Throughput per process"
    if _is_empty(ranks, "rank", "step", "images_per_second"):
        return empty_figure(NO_DATA, title)
    fig = go.Figure()
    labels = []
    for rank, g in ranks.sort_values(["rank", "step"]).groupby("rank"):
        g = g.assign(smooth=ema(g["images_per_second"], smoothing))
        shown = downsample(g, max_points)
        label = f"rank {int(rank)}"
        labels.append(label)
        fig.add_trace(go.Scatter(
            x=shown["step"], y=shown["smooth"], mode="lines", name=label,
            # In step with each other, the ranks' lines overlap: dashes keep each one visible.
            line={"color": _EXTRA_COLORS[int(rank) % len(_EXTRA_COLORS)], "width": 2,
                  "dash": ("solid", "dash", "dot", "dashdot")[int(rank) % 4]},
            hovertemplate=f"<b>{label}</b><br>step %{{x}}<br>%{{y:.0f}} images/s<extra></extra>",
        ))
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(title_text="images/s (this process)", rangemode="tozero")
    return _style(fig, title, legend_labels=labels)


# --- strategy advisor, domain adaptation, skip connections (issue 8) -------------------

SOURCE_COLOR = "#1F6FB2"  # the domain a run trained on
TARGET_COLOR = "#E8743B"  # the domain it is adapted to


def advisor_quadrants(advice: Mapping) -> go.Figure:
    """The classic two-by-two table with this dataset as a point: labelled
    images per class (log x) against the measured domain shift (y, similar at
    the bottom). `advice` is `core.lessons.advisor.Advice.to_dict()`."""
    title = "Where your data sits"
    k = _number(_get(advice, "labels_per_class"))
    shift = _number(_get(advice, "domain_shift"))
    th = _get(advice, "thresholds", {}) or {}
    small, cut = float(th.get("small_data", 50)), float(th.get("shift", 0.55))
    if k is None:
        return empty_figure("Measure the data first", title)
    y = shift if shift is not None else (cut * 0.5 if _get(advice, "similarity") == "similar" else cut * 1.5)
    x_lo, x_hi = 1.0, max(1000.0, k * 3)
    y_hi = max(1.2, y * 1.25, cut * 2)
    fig = go.Figure()
    cells = [((x_lo, small), (0, cut), "small data, similar", "feature extraction"),
             ((small, x_hi), (0, cut), "large data, similar", "full fine-tuning"),
             ((x_lo, small), (cut, y_hi), "small data, different", "partial fine-tuning"),
             ((small, x_hi), (cut, y_hi), "large data, different", "full fine-tuning (vs scratch)")]
    here = _get(advice, "quadrant")
    for (x0, x1), (y0, y1), name, strategy in cells:
        chosen = name == here
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, line={"width": 1, "color": "#BBB"},
                      fillcolor="rgba(242,142,43,0.16)" if chosen else "rgba(0,0,0,0.02)", layer="below")
        fig.add_annotation(x=math.log10(math.sqrt(x0 * x1)), y=y0 + 0.9 * (y1 - y0), text=f"<b>{name}</b><br>{strategy}",
                           showarrow=False, font={"size": 11, "color": "#333" if chosen else "#888"})
    fig.add_trace(go.Scatter(
        x=[k], y=[y], mode="markers+text", text=[str(_get(advice, "dataset", "your data")).split("/")[-1]],
        textposition="top center", marker={"size": 14, "color": TRAINABLE_COLOR, "line": {"width": 1.5, "color": "#333"}},
        hovertemplate="%{x:g} labelled images per class<br>domain shift %{y:.3f}<extra></extra>", showlegend=False))
    ticks = [v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if v <= x_hi]
    fig.update_xaxes(type="log", range=[math.log10(x_lo), math.log10(x_hi)], title_text="labelled images per class (log)",
                     tickmode="array", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])
    fig.update_yaxes(range=[0, y_hi], title_text="domain shift from the pretraining data")
    sub = ("shift measured through " + str(_get(advice, "shift_backbone"))) if shift is not None else "no BatchNorm: similarity from the kNN probe"
    return _style(fig, title, sub, height=360)


def skip_losses(curves: list[Mapping], smoothing: float = 0.8) -> go.Figure:
    """Training loss vs step for each stack: colour by depth, dashed plain,
    solid residual (smoothed; the raw curve in the hover)."""
    title = "Training loss vs step"
    if not curves:
        return empty_figure("Run the demo to see the curves", title)
    depths = sorted({int(c["depth"]) for c in curves})
    palette = ["#1A9E77", "#1F6FB2", "#C0392B", "#7B3FA0", "#D1478F", "#A6761D"]
    fig = go.Figure()
    names = []
    for c in sorted(curves, key=lambda c: (int(c["depth"]), bool(c["residual"]))):
        losses = np.asarray(c.get("losses") or [], dtype=float)
        if not len(losses):
            continue
        color = palette[depths.index(int(c["depth"])) % len(palette)]
        name = f"{c['depth']} layers, {'residual' if c['residual'] else 'plain'}"
        names.append(name)
        fig.add_trace(go.Scatter(
            x=np.arange(1, len(losses) + 1), y=ema(losses, smoothing), mode="lines", name=name,
            line={"color": color, "width": 2.2, "dash": "solid" if c["residual"] else "dot"},
            customdata=losses, hovertemplate=f"{name}<br>step %{{x}}<br>loss %{{y:.3f}} (raw %{{customdata:.3f}})<extra></extra>"))
    fig.update_xaxes(title_text="SGD step")
    fig.update_yaxes(title_text="training loss (smoothed)", rangemode="tozero")
    return _style(fig, title, "dotted: plain stack · solid: the same stack with identity skips", height=380, legend_labels=names)


def skip_grad_norms(curves: list[Mapping]) -> go.Figure:
    """Per-layer gradient norm at initialisation (log y), layer 1 = the input side."""
    title = "Gradient norm per layer at initialisation"
    if not curves:
        return empty_figure("Run the demo to see the gradients", title)
    depths = sorted({int(c["depth"]) for c in curves})
    palette = ["#1A9E77", "#1F6FB2", "#C0392B", "#7B3FA0", "#D1478F", "#A6761D"]
    fig = go.Figure()
    names = []
    floor = None
    for c in curves:
        vals = [v for v in c.get("layer_grad_norms") or [] if v and v > 0]
        floor = min([floor or math.inf, *vals]) if vals else floor
    for c in sorted(curves, key=lambda c: (int(c["depth"]), bool(c["residual"]))):
        norms = list(c.get("layer_grad_norms") or [])
        if not norms:
            continue
        color = palette[depths.index(int(c["depth"])) % len(palette)]
        name = f"{c['depth']} layers, {'residual' if c['residual'] else 'plain'}"
        names.append(name)
        # A gradient that underflowed to 0 is drawn at the smallest non-zero value seen, marked in the hover.
        shown = [v if v > 0 else (floor or 1e-30) for v in norms]
        fig.add_trace(go.Scatter(
            x=np.arange(1, len(norms) + 1), y=shown, mode="lines+markers", name=name,
            line={"color": color, "width": 2, "dash": "solid" if c["residual"] else "dot"}, marker={"size": 4},
            customdata=[f"{v:.3g}" if v > 0 else "0 (underflow)" for v in norms],
            hovertemplate=f"{name}<br>layer %{{x}}<br>gradient norm %{{customdata}}<extra></extra>"))
    fig.update_xaxes(title_text="weight layer (1 = next to the input)")
    shown_all = [v for c in curves for v in (c.get("layer_grad_norms") or []) if v and v > 0]
    wide = bool(shown_all) and max(shown_all) / min(shown_all) > 100  # one tick per decade, else plotly's own
    fig.update_yaxes(type="log", title_text="‖∂loss/∂W‖ (log)", exponentformat="power", dtick=1 if wide else None)
    return _style(fig, title, "one batch, before any training", height=380, legend_labels=names)


def adapt_embedding(embedding: Mapping, title: str = "Source and target features") -> go.Figure:
    """Two panels, before and after adaptation: the 2-D projection of source
    and target penultimate features (the clouds should come together)."""
    if not embedding or not embedding.get("domain"):
        return empty_figure("No embedding yet", title)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("before adaptation", "after adaptation"),
                        horizontal_spacing=0.06)
    domain = list(embedding["domain"])
    label = list(embedding.get("label") or [""] * len(domain))
    for col, key in ((1, "before"), (2, "after")):
        xy = embedding.get(key) or {}
        for dom, color in (("source", SOURCE_COLOR), ("target", TARGET_COLOR)):
            idx = [i for i, d in enumerate(domain) if d == dom]
            if not idx or not xy:
                continue
            fig.add_trace(go.Scattergl(
                x=[xy["x"][i] for i in idx], y=[xy["y"][i] for i in idx], mode="markers", name=dom,
                legendgroup=dom, showlegend=col == 1,
                marker={"size": 5, "color": color, "opacity": 0.65},
                customdata=[label[i] for i in idx],
                hovertemplate=f"{dom}<br>class %{{customdata}}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    return _style(fig, title, "PCA of the penultimate features, source test images and target images",
                  height=380, legend_labels=["source", "target"], panel_titles=True)
