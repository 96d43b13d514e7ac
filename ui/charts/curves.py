"""Runs over time: epoch curves, step loss and LR, accuracy against time, and
throughput per process (Live, Compare)."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.charts.base import NO_DATA, _EXTRA_COLORS, _RunStyle, _is_empty, _run_styles, _style, _styled, empty_figure
from ui.charts.spec import Spec

# --- runs over epochs -----------------------------------------------------------------

_METRIC_TITLES = {
    "val_accuracy": "validation accuracy", "train_accuracy": "training accuracy",
    "val_loss": "validation loss", "train_loss": "training loss",
    "images_per_second": "images per second", "seconds": "seconds per epoch",
}


def _metric_title(metric: str) -> str:
    return _METRIC_TITLES.get(metric, metric.replace("_", " "))


class _Rows:
    """One run's rows of a metrics frame, column by column as numpy arrays
    (what the chart builders read: `g[col]`, `col in g`, `len(g)`)."""

    def __init__(self, columns: "_Columns", start: int, stop: int):
        self._columns, self._start, self._stop = columns, start, stop

    def __getitem__(self, col: str) -> np.ndarray:
        return self._columns[col][self._start:self._stop]

    def __contains__(self, col: str) -> bool:
        return col in self._columns.frame

    def __len__(self) -> int:
        return self._stop - self._start


class _Columns:
    """A frame's columns in a given row order, each made numpy when first read."""

    def __init__(self, frame: pd.DataFrame, order: np.ndarray):
        self.frame, self._order, self._arrays = frame, order, {}

    def __getitem__(self, col: str) -> np.ndarray:
        if col not in self._arrays:
            self._arrays[col] = self.frame[col].to_numpy()[self._order]
        return self._arrays[col]


def _sorted_runs(metrics: pd.DataFrame, runs: pd.DataFrame | None, order_col: str) -> tuple[dict[str, _RunStyle], list[tuple[str, _Rows]]]:
    """Styles by run id, and each run's rows ordered by `order_col`, in the order of the styles."""
    codes, uniques = pd.factorize(metrics["run_id"].astype(str))
    styles = _run_styles(runs, list(uniques))
    order = np.lexsort((metrics[order_col].to_numpy(), codes))  # stable: by run, then order_col
    codes = codes[order]
    columns = _Columns(metrics, order)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    bounds = {str(uniques[codes[a]]): (a, b) for a, b in zip(starts, np.r_[starts[1:], len(codes)])}
    return styles, [(rid, _Rows(columns, *bounds[rid])) for rid in styles if rid in bounds]


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
    spec = Spec()
    for rid, g in series:
        s = styles[rid]
        for key, dash, suffix in ((metric, "solid", ""), (partner, "dash", " (train)")):
            if key is None or key not in g:
                continue
            spec.add({
                "type": "scatter", "x": g["epoch"], "y": g[key], "mode": "lines+markers", "name": s.label + suffix,
                "legendgroup": rid, "showlegend": not suffix,
                "line": {"color": s.color, "dash": dash, "width": 2.2 if not suffix else 1.6},
                "marker": {"symbol": s.symbol, "size": 6, "color": s.color},
                "hovertemplate": f"<b>{s.label}</b>{suffix}<br>epoch %{{x}}<br>{_metric_title(key)} %{{y:.4g}}<extra></extra>",
            })
    spec.xaxes(title={"text": "epoch"}, tickformat="d", **_given(dtick=_epoch_dtick(metrics)))
    shown = pd.concat([metrics[k] for k in (metric, partner) if k is not None and k in metrics])
    spec.yaxes(title={"text": _metric_title(metric)}, **_accuracy_axis(metric, shown))
    subtitle = "dashed: training" if partner else None
    return _styled(spec, title, subtitle, legend_labels=[styles[rid].label for rid, _ in series])


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
    spec = Spec(2, 2, tuple(_metric_title(m) for m, _, _ in panels), shared_xaxes=True, vertical_spacing=0.12,
                horizontal_spacing=0.08)
    for rid, g in series:
        s = styles[rid]
        first = True
        epoch = g["epoch"]
        for metric, row, col in panels:
            if metric not in g:
                continue
            train = metric.startswith("train_")
            spec.add({
                "type": "scatter", "x": epoch, "y": g[metric], "mode": "lines+markers", "name": s.label,
                "legendgroup": rid, "showlegend": first,
                "line": {"color": s.color, "dash": "dash" if train else "solid", "width": 1.6 if train else 2.2},
                "marker": {"symbol": s.symbol, "size": 5, "color": s.color},
                "hovertemplate": f"<b>{s.label}</b><br>epoch %{{x}}<br>{_metric_title(metric)} %{{y:.4g}}<extra></extra>",
            }, row, col)
            first = False
    spec.xaxes(tickformat="d", **_given(dtick=_epoch_dtick(metrics)))
    spec.xaxes(row=2, title={"text": "epoch"})
    acc = pd.concat([metrics[c] for c in ("train_accuracy", "val_accuracy") if c in metrics])
    spec.yaxes(row=2, range=_accuracy_range(acc), tickformat=".0%")
    spec.annotations(font={"size": 12})
    return _styled(spec, title, height=480, legend_labels=[styles[rid].label for rid, _ in series], panel_titles=True)


def _given(**props) -> dict:
    """The properties that have a value (plotly leaves a None one unset)."""
    return {k: v for k, v in props.items() if v is not None}


def accuracy_vs_time(metrics: pd.DataFrame, runs: pd.DataFrame) -> go.Figure:
    """Validation accuracy against cumulative training seconds, one line per
    run: what a strategy buys per second of compute."""
    title = "Validation accuracy vs training time"
    if _is_empty(metrics, "run_id", "epoch", "val_accuracy", "seconds"):
        return empty_figure(NO_DATA, title)
    styles, series = _sorted_runs(metrics, runs, "epoch")
    spec = Spec()
    for rid, g in series:
        s = styles[rid]
        elapsed = np.nancumsum(pd.to_numeric(g["seconds"], errors="coerce").astype(float))  # a missing time counts 0
        spec.add({
            "type": "scatter", "x": elapsed, "y": g["val_accuracy"], "mode": "lines+markers", "name": s.label,
            "legendgroup": rid, "line": {"color": s.color, "width": 2.2},
            "marker": {"symbol": s.symbol, "size": 6, "color": s.color}, "customdata": g["epoch"],
            "hovertemplate": f"<b>{s.label}</b><br>epoch %{{customdata}} after %{{x:.1f}} s<br>"
                             "validation accuracy %{y:.2%}<extra></extra>",
        })
    spec.xaxes(title={"text": "training time (s)"}, rangemode="tozero")
    spec.yaxes(title={"text": "validation accuracy"}, range=_accuracy_range(metrics["val_accuracy"]), tickformat=".0%")
    return _styled(spec, title, legend_labels=[styles[rid].label for rid, _ in series])


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
    # pandas' EWM with adjust=True is this bias-corrected average (sum of w^i x[t-i] over sum of
    # w^i); ignore_na skips NaNs and carries the last average over them. In C: a refresh smooths 20 runs.
    return pd.Series(x).ewm(alpha=1 - w, adjust=True, ignore_na=True).mean().to_numpy()


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
    spec = Spec()
    for rid, g in series:
        s = styles[rid]
        loss = pd.to_numeric(g["loss"], errors="coerce")
        smooth = ema(loss, smoothing)
        keep = downsample_indices(len(g), max_points)
        step = g["step"][keep]
        epoch = g["epoch"][keep] if "epoch" in g else step * 0
        spec.add({
            "type": "scatter", "x": step, "y": loss[keep], "mode": "lines", "name": f"{s.label} (raw)",
            "legendgroup": rid, "showlegend": False, "opacity": 0.3, "line": {"color": s.color, "width": 1},
            "customdata": epoch,
            "hovertemplate": f"{s.label}<br>step %{{x}} (epoch %{{customdata}})<br>loss %{{y:.4g}}<extra></extra>",
        })
        spec.add({
            "type": "scatter", "x": step, "y": smooth[keep], "mode": "lines", "name": s.label, "legendgroup": rid,
            "line": {"color": s.color, "width": 2.4}, "customdata": epoch,
            "hovertemplate": f"<b>{s.label}</b><br>step %{{x}} (epoch %{{customdata}})<br>"
                             "smoothed loss %{y:.4g}<extra></extra>",
        })
    spec.xaxes(title={"text": "step"}, rangemode="tozero")
    spec.yaxes(title={"text": "training loss"}, **({"type": "log"} if log_y else {"rangemode": "tozero"}))
    subtitle = f"faint: raw, bold: smoothed (EMA {min(max(smoothing, 0), 0.999):g})"
    return _styled(spec, title, subtitle, legend_labels=[styles[rid].label for rid, _ in series])


def lr_curve(steps: pd.DataFrame, runs: pd.DataFrame, max_points: int = 500) -> go.Figure:
    """The head's learning rate by step, per run (warm-up then cosine)."""
    title = "Learning rate by step"
    if _is_empty(steps, "run_id", "step", "lr"):
        return empty_figure(NO_DATA, title)
    styles, series = _sorted_runs(steps, runs, "step")
    spec = Spec()
    for rid, g in series:
        s = styles[rid]
        keep = downsample_indices(len(g), max_points)
        spec.add({
            "type": "scatter", "x": g["step"][keep], "y": g["lr"][keep], "mode": "lines", "name": s.label,
            "legendgroup": rid, "line": {"color": s.color, "width": 2},
            "hovertemplate": f"<b>{s.label}</b><br>step %{{x}}<br>learning rate %{{y:.3g}}<extra></extra>",
        })
    spec.xaxes(title={"text": "step"}, rangemode="tozero")
    spec.yaxes(title={"text": "learning rate (head)"}, exponentformat="e", rangemode="tozero")
    return _styled(spec, title, legend_labels=[styles[rid].label for rid, _ in series])

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
