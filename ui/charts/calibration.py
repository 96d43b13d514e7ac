"""Calibration (Compare): a reliability diagram per run, before and after
temperature scaling, against the diagonal of a perfectly calibrated model."""

from __future__ import annotations

import plotly.graph_objects as go

from ui.charts.base import _EXTRA_COLORS, _style, empty_figure, plain


def reliability_diagram(runs: list[tuple[str, dict, float | None, float | None]]) -> go.Figure:
    """`runs`: (label, reliability {"before": bins, "after": bins}, ECE, calibrated ECE).
    Each bin: its mean confidence and accuracy; on the diagonal, confidence
    means what it says. Solid: the network's own probabilities; dashed: after
    temperature scaling."""
    title = "Reliability: accuracy against confidence"
    runs = [r for r in runs if r[1]]
    if not runs:
        return empty_figure("No finished run with calibration figures yet", title)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"color": "#9E9E9E", "dash": "dot", "width": 1}, hoverinfo="skip"))
    names = ["perfectly calibrated"]
    for i, (label, rel, ece, ece_cal) in enumerate(runs):
        color = _EXTRA_COLORS[i % len(_EXTRA_COLORS)]
        for state, dash, figure in (("before", "solid", ece), ("after", "dash", ece_cal)):
            bins = [b for b in rel.get(state) or [] if b.get("count")]
            name = f"{plain(label)} · {'as trained' if state == 'before' else 'temperature-scaled'}" + (
                f" (ECE {figure:.3f})" if figure is not None else "")
            names.append(name)
            fig.add_trace(go.Scatter(
                x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers", name=name,
                line={"color": color, "dash": dash}, marker={"size": [min(16, 4 + b["count"] ** 0.5) for b in bins]},
                customdata=[b["count"] for b in bins],
                hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} images<extra></extra>"))
    fig.update_xaxes(range=[0, 1.02], title_text="confidence (top-class probability)", tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", tickformat=".0%")
    return _style(fig, title, "Below the diagonal: over-confident. Marker size: images in the bin.", legend_labels=names)
