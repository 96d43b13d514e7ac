"""Seeing inside a run: confusion matrix, per-class metrics, embeddings, the LR
finder curve (Compare, Inspect, Experiment)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import plotly.graph_objects as go

from ui.charts.base import FROZEN_COLOR, TRAINABLE_COLOR, _EXTRA_COLORS, _style, empty_figure, plain
from ui.charts.curves import _accuracy_range

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
