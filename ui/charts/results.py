"""Results and trade-offs: test accuracy, top-k predictions, accuracy against
parameters, labels-per-class curves, distillation (Compare, Predict, races,
sweeps)."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.train import strategies
from core.train.config import RunConfig
from ui.charts.base import (
    TRAINABLE_COLOR, UNKNOWN_COLOR, _config_value, _human, _is_empty, _run_styles, _style, _styled, empty_figure, plain,
    strategy_color
)
from ui.charts.spec import Spec, array
from ui.charts.curves import _accuracy_range

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
    spec = Spec()
    strategies = list(dict.fromkeys(done["_strategy"]))
    for strategy in strategies:
        part = done[done["_strategy"].map(lambda s: s == strategy)]
        spec.add({
            "type": "bar", "y": part["_label"].tolist(), "x": array(part["_acc"]).astype(float), "orientation": "h",
            "name": str(strategy or "unknown"), "marker": {"color": strategy_color(strategy), "line": {"width": 0}},
            "text": [f"{a:.1%}" for a in part["_acc"]], "textposition": "outside", "cliponaxis": False,
            "hovertemplate": "<b>%{y}</b><br>test accuracy %{x:.2%}<extra></extra>",
        })
    spec.layout.update(barmode="overlay", bargap=0.3)
    spec.xaxes(range=[0, 1.12], tickformat=".0%", title={"text": "test accuracy"}, tickvals=[0, 0.25, 0.5, 0.75, 1])
    spec.yaxes(type="category", categoryorder="array", categoryarray=list(done["_label"]), autorange="reversed")
    height = min(380, max(220, 110 + 30 * len(done)))
    return _styled(spec, title, height=height, legend_labels=[str(s or "unknown") for s in strategies])


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
