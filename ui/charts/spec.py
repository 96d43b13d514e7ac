"""Figures written directly as plotly's own JSON, for the charts a live page
redraws every refresh.

Building a `go.Figure` validates every property of every trace as it is set,
and `st.plotly_chart` then deep-copies the whole figure back out to JSON: with
20 runs that was some 140 trace objects and most of a Live refresh. A `Spec`
writes the same figure as plain dicts (the arrays stay numpy until they are sent
as plotly's base64 typed arrays, exactly as `Figure.to_dict` sends them), and
`SpecFigure` hands those dicts to Streamlit as they are.

A `SpecFigure` is still a `go.Figure` for everything else: the first time
anything but `to_dict` is asked of it (`.data`, `.layout`, `update_*`, ...),
it builds itself in full, with plotly's validation, from the same JSON, and
behaves as one from then on (tests/ui/test_charts.py checks that what is sent
is what plotly would accept and send itself).
"""

from __future__ import annotations

import base64
import copy
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


class SpecFigure(go.Figure):
    """A figure held as its JSON until something reads it as a figure."""

    def __init__(self, spec: dict):  # noqa: D107 (no go.Figure set-up yet: that is the point)
        self.__dict__["_spec"] = spec

    def __getattr__(self, name: str):
        spec = self.__dict__.get("_spec")
        if spec is None:
            raise AttributeError(name)
        self.__dict__["_spec"] = None
        go.Figure.__init__(self, spec)  # the full, validated figure, from the same JSON
        return getattr(self, name)

    def to_dict(self) -> dict:
        spec = self.__dict__.get("_spec")
        if spec is None:
            return super().to_dict()
        layout = dict(spec["layout"])
        template = layout.pop("template", None)
        seen: dict[int, Any] = {}  # an array shared by traces (a run's steps) is encoded once
        sent = {"data": [_sendable(t, seen) for t in spec["data"]], "layout": _sendable(layout, seen)}
        if template is not None:
            sent["layout"]["template"] = template  # shared, read-only, holds no arrays
        return sent

    def to_plotly_json(self) -> dict:
        return self.to_dict()


def _sendable(obj: Any, seen: dict[int, Any]) -> Any:
    """A copy of `obj` with numpy arrays as plotly's typed-array specs (as
    `Figure.to_dict` does; its "range" values stay plain lists)."""
    t = type(obj)
    if t is dict:
        return {k: (v.tolist() if k == "range" and type(v) is np.ndarray else _sendable(v, seen)) for k, v in obj.items()}
    if t is np.ndarray:
        if id(obj) not in seen:
            seen[id(obj)] = _typed_array(obj)
        return seen[id(obj)]
    if t is list or t is tuple:
        return [_sendable(v, seen) for v in obj] if any(type(v) in _NESTED for v in obj) else list(obj)
    return obj


_NESTED = (dict, list, tuple, np.ndarray)


_SHORT = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
          "float32": "f4", "float64": "f8"}


def _typed_array(v: np.ndarray):
    """`_plotly_utils.utils.to_typed_array_spec` for an array already numpy
    (without its conversion of any input to a read-only copy, which costs more
    than the encoding): 64-bit integers narrowed to the smallest type that
    holds them, other types sent as a list."""
    if v.size == 0:
        return v
    if v.dtype.kind in "iu" and v.dtype.itemsize == 8:
        lo, hi = v.min(), v.max()
        for t in (("int8", "int16", "int32") if v.dtype.kind == "i" else ("uint8", "uint16", "uint32")):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                v = v.astype(t)
                break
        else:
            return v
    code = _SHORT.get(str(v.dtype))
    if code is None:
        return v
    spec = {"dtype": code, "bdata": base64.b64encode(np.ascontiguousarray(v)).decode("ascii")}
    if v.ndim > 1:
        spec["shape"] = str(v.shape)[1:-1]
    return spec


def array(values) -> np.ndarray:
    """Values for a trace: numpy, as plotly's validators would store them."""
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy()
    return np.asarray(values)


@lru_cache(maxsize=32)
def _grid(rows: int, cols: int, titles: tuple[str, ...], options: tuple) -> tuple[dict, tuple]:
    """make_subplots' layout (axes domains, panel titles) and each cell's axis
    names, computed once per shape: it is the same for every refresh."""
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles) or None, **dict(options))
    layout = fig.to_plotly_json()["layout"]
    layout.pop("template", None)
    cells = tuple(tuple((fig._grid_ref[r][c][0].trace_kwargs, fig._grid_ref[r][c][0].layout_keys) for c in range(cols))
                  for r in range(rows))
    return layout, cells


def merge(into: dict, props: dict) -> dict:
    """`props` merged into `into`, nested dicts key by key (update_layout's way)."""
    for k, v in props.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
    return into


class Spec:
    """A figure's data and layout as dicts, with the few figure operations the
    live charts use."""

    def __init__(self, rows: int = 0, cols: int = 0, titles: tuple[str, ...] = (), **options):
        self.data: list[dict] = []
        self.cells: tuple = ()
        self.layout: dict = {}
        if rows:
            layout, self.cells = _grid(rows, cols, tuple(titles), tuple(sorted(options.items())))
            self.layout = copy.deepcopy(layout)

    def add(self, trace: dict, row: int | None = None, col: int | None = None) -> None:
        if row is not None:
            trace = {**trace, **self.cells[row - 1][col - 1][0]}
        self.data.append(trace)

    def _axes(self, letter: str, row: int | None, col: int | None) -> list[str]:
        if not self.cells:
            return [f"{letter}axis"]
        i = 0 if letter == "x" else 1
        return [keys[1][i] for r, cells in enumerate(self.cells, 1) for c, keys in enumerate(cells, 1)
                if (row is None or r == row) and (col is None or c == col)]

    def xaxes(self, row: int | None = None, col: int | None = None, **props) -> None:
        for key in self._axes("x", row, col):
            merge(self.layout.setdefault(key, {}), copy.deepcopy(props))

    def yaxes(self, row: int | None = None, col: int | None = None, **props) -> None:
        for key in self._axes("y", row, col):
            merge(self.layout.setdefault(key, {}), copy.deepcopy(props))

    def annotations(self, **props) -> None:
        for a in self.layout.get("annotations", []):
            merge(a, copy.deepcopy(props))

    def figure(self) -> SpecFigure:
        return SpecFigure({"data": self.data, "layout": self.layout})
