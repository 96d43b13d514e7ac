"""Who can reach the app and what a hostile file or name can do: the shipped
Streamlit config, weights loaded as data only, names shown as typed."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

from helpers import ROOT
from core import limits
from ui import charts


def _sources() -> list[Path]:
    """Every Python file of the app (tests may load a pickle on purpose, to prove a payload is real)."""
    skip = {".venv", "tests", ".git", "runs", "node_modules"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def _is_torch_load(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Attribute) and f.attr in ("load", "load_state_dict_from_url", "load_url")
            and ((isinstance(f.value, ast.Name) and f.value.id == "torch")
                 or (isinstance(f.value, ast.Attribute) and f.value.attr in ("hub", "model_zoo"))))


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    sources = _sources()
    assert len(sources) > 20 and any(p.name == "weights.py" for p in sources)
    bad, seen = [], 0
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _is_torch_load(node):
                seen += 1
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                    (node.value.id in ("pickle", "dill", "cloudpickle", "joblib") and node.attr in ("load", "loads"))
                    or (node.value.id == "np" and node.attr == "load")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} ({node.value.id}.{node.attr})")
    assert seen >= 3  # weights.py, engine.py, predict.py at least: the scan sees them
    assert not bad, "loads that could run code from a file: " + ", ".join(bad)


def test_the_app_listens_on_localhost_with_xsrf_and_the_upload_limit():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = cfg["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True and server.get("enableCORS", True) is True
    assert server["maxUploadSize"] == limits.MAX_UPLOAD_MB.default
    assert cfg["browser"]["gatherUsageStats"] is False
    readme = (ROOT / "README.md").read_text()
    assert "--server.address" in readme and "TLAB_MAX_UPLOAD_MB" in readme and "TLAB_FOLDER_ROOTS" in readme


HOSTILE = ['**bold** _it_ [link](https://evil.example/x) ![img](https://evil.example/p.png)',
           '<a href="https://evil.example">click</a> <img src=x onerror=alert(1)> &lt;',
           ':red[alarm] :skull: $x^2$ `code` # heading\n\n- item | table | ~~gone~~ www.evil.example me@evil.example',
           '# not a heading', '- not a list', '1. not a list either']


PUNCT_ESCAPE = r"\\([!-/:-@\[-`{-~])"  # CommonMark: a backslash escapes ASCII punctuation only


def test_names_are_markdown_and_html_inert_in_pages_and_charts():
    from ui.common import JOINER, plain

    special = set("\\`*_[]<>~$&|:")
    for text in HOSTILE:
        out = plain(text)
        assert "\n" not in out and not re.match(r"\s*[-+#>]", out)
        bare = re.sub(PUNCT_ESCAPE, "", out)
        assert not special & set(bare), bare  # every special character is escaped
        shown = re.sub(PUNCT_ESCAPE, r"\1", out)
        assert not re.search(r"://|www\.|\w@", shown)  # nothing the page would turn into a link
        assert shown.replace(JOINER, "") == " ".join(text.split())  # and it reads as typed
    assert plain("resnet18-f37072fd.pth (a file)") == "resnet18-f37072fd.pth (a file)"  # ordinary names stay readable
    assert [plain(v) for v in ("0.9219", "-0.5", "12", "-", "---", "1. x", "#1")] == \
        ["0.9219", "-0.5", "12", "\\-", "\\---", "1\\. x", "#1"]  # numbers in tables stay numbers
    fig = charts.topk_bars([(HOSTILE[1], 0.7), ("cat", 0.3)])
    spec = json.loads(fig.to_json())
    assert spec["data"][0]["y"][0].startswith("&lt;a href=") and "<a" not in json.dumps(spec["data"][0]["y"])
    assert charts.run_label({"config": '{"strategy": "full", "backbone": "x"}', "name": "<b>me</b>"}) == "full · x (&lt;b&gt;me&lt;/b&gt;)"
    classes = [HOSTILE[1], "cat"]
    for fig in (charts.confusion_heatmap([[3, 1], [0, 4]], classes),
                charts.embedding_scatter([[0, 0], [1, 1]], [0, 1], classes),
                charts.per_class_metric_bars([("<i>run</i>", [{"class": c, "precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                             "support": 2} for c in classes])])):
        text = json.dumps(json.loads(fig.to_json())["data"])
        assert "<a href" not in text and "<i>run" not in text and "&lt;a href=" in text
