"""The layers of `core` hold: imports run one way, down, and never in a circle.

    cli  ->  service  ->  runs | insight | lessons  ->  train  ->  paths, limits, errors, faults, children

`service` is the one way in for pages and the CLI (build and check a config,
preview its plan, make and queue runs, start background work): both call it,
so it sits above what it combines and below the CLI.

Every import counts, at the top of a module or inside a function (a lazy
import still ties the two modules together), and under TYPE_CHECKING too.
The modules are read with `ast`, not imported, so this costs well under a
second and needs no torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

CORE = ROOT / "core"

# Lower rank = lower layer; a module may import its own rank or a lower one.
SHARED = {"core", "core.paths", "core.limits", "core.errors", "core.faults", "core.children"}
RANK = {"shared": 0, "train": 1, "runs": 2, "insight": 2, "lessons": 2, "service": 3, "cli": 4}

# runs, insight and lessons sit side by side and do not import each other,
# except these (importer, imported) pairs:
SIDEWAYS_ALLOWED = {
    # The advisor scores a dataset on the frozen backbone's penultimate
    # features, and the adaptation demo draws both domains in one 2-D
    # projection: both are insight's feature extractor and projection, reused
    # rather than copied.
    ("core.lessons.advisor", "core.insight.embeddings"),
    ("core.lessons.adapt", "core.insight.embeddings"),
}

# views/*.py that import torch: none (core.service does the torch work pages need).
VIEWS_IMPORTING_TORCH: set[str] = set()

UI_ONLY = ("streamlit", "plotly")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _imported_names(path: Path, name: str, modules: dict | None = None) -> list[tuple[str, int]]:
    """Every module an `import` or `from ... import` in the file names, with
    its line. `from pkg import mod` names pkg.mod where that is a module of
    `modules`, else pkg."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if modules is not None and sub in modules else base, node.lineno))
    return out


def _graph() -> dict[str, dict[str, int]]:
    """core module -> {core module it imports: first line that does}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imported_names(path, name, modules):
            if target in modules and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _layer(name: str) -> str:
    if name in SHARED:
        return "shared"
    if name == "core.__main__":
        return "cli"
    return name.split(".")[1]


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_every_module_and_lazy_imports():
    graph = _graph()
    assert {"core.train.engine", "core.runs.store", "core.cli.main", "core.insight.lr_finder"} <= set(graph)
    assert all(_layer(m) in RANK for m in graph), sorted(m for m in graph if _layer(m) not in RANK)
    assert "core.train.engine" in graph["core.runs.jobs"]  # imported inside a function there


def test_no_import_cycle_between_core_modules():
    cycles = _cycles(_graph())
    assert cycles == [], "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_run_down_the_layers():
    wrong = []
    for importer, edges in _graph().items():
        for imported, line in edges.items():
            a, b = _layer(importer), _layer(imported)
            if RANK[b] > RANK[a]:
                wrong.append(f"{importer}:{line} imports {imported} (layer {b} is above {a})")
            elif RANK[a] == RANK[b] and a != b and (importer, imported) not in SIDEWAYS_ALLOWED:
                wrong.append(f"{importer}:{line} imports {imported} ({a} and {b} are side by side)")
    assert wrong == [], "\n".join(wrong)


def test_the_sideways_allow_list_has_no_stale_entry():
    graph = _graph()
    assert [pair for pair in SIDEWAYS_ALLOWED if pair[1] not in graph.get(pair[0], {})] == []


def test_core_imports_neither_streamlit_nor_plotly():
    bad = [f"{name}:{line} imports {target}" for name, path in _modules().items()
           for target, line in _imported_names(path, name) if target.split(".")[0] in UI_ONLY]
    assert bad == [], "\n".join(bad)


def test_views_import_no_torch():
    importing = set()
    for path in sorted((ROOT / "views").glob("*.py")):
        if any(t.split(".")[0] == "torch" for t, _ in _imported_names(path, f"views.{path.stem}")):
            importing.add(path.relative_to(ROOT).as_posix())
    assert importing == VIEWS_IMPORTING_TORCH  # a new one is an error; one that stopped should leave the list


# No product file over MAX_LINES: a module that outgrows it is split by what its parts are about.
# STILL_OVER: files allowed over it for now, each at most the size given (empty since phase 2 split
# data, the store, the engine and the charts); an entry leaves the list when its file is split.
MAX_LINES = 450
STILL_OVER: dict[str, int] = {}


def test_no_product_file_over_450_lines():
    files = [ROOT / "app.py", *sorted(p for d in ("core", "ui", "views") for p in (ROOT / d).rglob("*.py"))]
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in files}
    too_long = {name: n for name, n in sizes.items() if n > STILL_OVER.get(name, MAX_LINES)}
    assert too_long == {}, f"over {MAX_LINES} lines (split them): {too_long}"
