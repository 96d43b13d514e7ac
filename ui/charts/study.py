"""A hyperparameter search's study, drawn with Optuna's own plotly figures:
the optimisation history, the parameters' importances, parallel coordinates
and every trial's validation curve (pruned ones visible where they stopped).
Each is laid out like the lab's other charts; a figure Optuna can't draw yet
(too few finished trials) says why instead."""

from __future__ import annotations

import warnings

import plotly.graph_objects as go

from ui.charts.base import HEIGHT, _TEMPLATE, empty_figure

FIGURES = {
    "history": ("plot_optimization_history", "Best validation accuracy so far, trial by trial"),
    "importance": ("plot_param_importances", "Which settings mattered (fANOVA importance)"),
    "parallel": ("plot_parallel_coordinate", "Settings of every finished trial, coloured by accuracy"),
    "curves": ("plot_intermediate_values", "Validation accuracy per epoch; pruned trials stop early"),
}


def study_figure(study, which: str) -> go.Figure:
    import optuna.visualization as ov

    func, title = FIGURES[which]
    try:
        with warnings.catch_warnings():  # Optuna marks some plots experimental
            warnings.simplefilter("ignore")
            fig = getattr(ov, func)(study)
    except (ValueError, RuntimeError) as e:  # e.g. importances need two finished trials
        return empty_figure(f"Not yet: {' '.join(str(e).split())[:120]}", title)
    fig.update_layout(template=_TEMPLATE, title=title, height=HEIGHT, margin=dict(l=50, r=20, t=50, b=40))
    if not fig.data:
        return empty_figure("No finished trial yet", title)
    return fig
