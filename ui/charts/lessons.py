"""The lessons' pages: strategy advisor, domain adaptation, skip connections."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.charts.base import TRAINABLE_COLOR, _get, _style, empty_figure
from ui.charts.curves import ema
from ui.charts.results import _number

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


_DEPTH_PALETTE = ("#1A9E77", "#1F6FB2", "#C0392B", "#7B3FA0", "#D1478F", "#A6761D")


def _stacks(curves: list[Mapping], key: str):
    """(curve, its `key` values, name, colour) for each stack with values, shallow first and plain
    before residual; the colour is the depth's, the same on both skip-connection charts."""
    depths = sorted({int(c["depth"]) for c in curves})
    for c in sorted(curves, key=lambda c: (int(c["depth"]), bool(c["residual"]))):
        values = list(c.get(key) or [])
        if values:
            yield (c, values, f"{c['depth']} layers, {'residual' if c['residual'] else 'plain'}",
                   _DEPTH_PALETTE[depths.index(int(c["depth"])) % len(_DEPTH_PALETTE)])


def skip_losses(curves: list[Mapping], smoothing: float = 0.8) -> go.Figure:
    """Training loss vs step for each stack: colour by depth, dashed plain,
    solid residual (smoothed; the raw curve in the hover)."""
    title = "Training loss vs step"
    if not curves:
        return empty_figure("Run the demo to see the curves", title)
    fig = go.Figure()
    names = []
    for c, values, name, color in _stacks(curves, "losses"):
        losses = np.asarray(values, dtype=float)
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
    fig = go.Figure()
    names = []
    floor = None
    for c in curves:
        vals = [v for v in c.get("layer_grad_norms") or [] if v and v > 0]
        floor = min([floor or math.inf, *vals]) if vals else floor
    for c, norms, name, color in _stacks(curves, "layer_grad_norms"):
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
