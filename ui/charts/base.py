"""Shared by every chart: colours (a strategy's own, frozen/trainable), the house
template, run labels and styles, titles and empty figures."""

from __future__ import annotations

import html
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pandas as pd
import plotly.graph_objects as go

from core.train import strategies
from ui.charts.spec import Spec, SpecFigure, merge

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
_TEMPLATE_JSON = _TEMPLATE.to_plotly_json()  # what a figure sends; shared by every Spec figure, never changed


NO_DATA = "No data yet"


def records(df: pd.DataFrame) -> list[dict]:
    """`df.to_dict("records")`, column by column (pandas builds it row by row, several times slower)."""
    cols = list(df.columns)
    return [dict(zip(cols, values)) for values in zip(*(df[c].tolist() for c in cols))]


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
        for r in records(runs[[c for c in ("id", "name", "strategy", "backbone", "config") if c in runs]]):
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


def _house_layout(title: str | None = None, subtitle: str | None = None, height: int = HEIGHT,
                  legend_labels: list[str] | None = None, panel_titles: bool = False) -> dict:
    """The house style's layout properties (template apart): compact, title
    and subtitle at the top left, then the legend in a row (or a few) of its
    own, then the plot. The legend is placed in pixels below the title, so it
    never covers the title nor the panels' own titles."""
    legend_labels = legend_labels or []
    pad = 6
    title_px = (26 if title else 0) + (18 if subtitle else 0)
    legend_px = 22 * _legend_rows(legend_labels)
    top = pad + title_px + legend_px + (22 if panel_titles else 0) + 8
    title_layout: dict = {"text": title or "", "x": 0.01, "xanchor": "left", "y": 1 - pad / height, "yanchor": "top",
                          "yref": "container", "font": {"size": 15}}
    if subtitle:
        title_layout["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#555"}}
    return {
        "height": height,
        "title": title_layout,
        "margin": {"l": 8, "r": 8, "t": top, "b": 8},
        "showlegend": bool(legend_labels),
        "legend": {"orientation": "h", "yref": "container", "y": 1 - (pad + title_px + 2) / height, "yanchor": "top",
                   "xanchor": "left", "x": 0, "font": {"size": 11}, "title": {"text": ""}},
        "font": {"size": 12},
        "hoverlabel": {"namelength": -1},
    }


def _style(fig: go.Figure, title: str | None = None, subtitle: str | None = None, height: int = HEIGHT,
           legend_labels: list[str] | None = None, panel_titles: bool = False) -> go.Figure:
    """The house style (plotly_white and `_house_layout`) on a figure."""
    validate = fig.layout._validate
    fig.layout._validate = False  # a shared, already valid template: no copy, no re-check
    fig.layout.template = _TEMPLATE
    fig.layout._validate = validate
    fig.update_layout(**_house_layout(title, subtitle, height, legend_labels, panel_titles))
    return fig


def _styled(spec: Spec, title: str | None = None, subtitle: str | None = None, height: int = HEIGHT,
            legend_labels: list[str] | None = None, panel_titles: bool = False) -> SpecFigure:
    """The house style on a `Spec`, as the figure to draw."""
    merge(spec.layout, _house_layout(title, subtitle, height, legend_labels, panel_titles))
    spec.layout["template"] = _TEMPLATE_JSON
    return spec.figure()


def empty_figure(message: str = NO_DATA, title: str | None = None, height: int = HEIGHT) -> go.Figure:
    """A blank figure that says why it is blank."""
    spec = Spec()
    spec.layout.update(annotations=[{"text": message, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper",
                                     "showarrow": False, "font": {"size": 14, "color": "#777"}}],
                       xaxis={"visible": False}, yaxis={"visible": False})
    return _styled(spec, title, height=height)


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
