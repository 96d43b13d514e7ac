"""`backbones`, `datasets`, `strategies`: the registries; `plan`: which layers
a strategy freezes, per module and per group."""

from __future__ import annotations

import json

from core.cli.options import run_config, strategy_options
from core.cli.output import out, print_table


def cmd_backbones(args) -> int:
    from core.train import backbones, weights

    if args.all or args.filter:
        return _timm_catalogue(args)
    rows = []
    for spec in backbones.REGISTRY.values():
        rows.append({
            "name": spec.name, "title": spec.title, "family": spec.family,
            "weights": weights.availability(spec),
            "params": spec.param_count(1000 if spec.has_pretrained else 10),
            "input_size": spec.input_size, "groups": len(spec.groups),
            "description": spec.description,
        })
    out(args, rows, rows, ["name", "title", "weights", "params", "input_size", "groups", "description"])
    return 0


# Parameter counts build each model on the meta device (~0.2 s each): only for a list this short.
PARAMS_UP_TO = 40


def _timm_catalogue(args) -> int:
    """timm's pretrained names (matching the filter), with where their weights are."""
    from core.train import hub, timm_zoo

    rows = timm_zoo.catalogue(args.filter or "")
    counted = len(rows) <= PARAMS_UP_TO
    for r in rows[:PARAMS_UP_TO] if counted else ():
        r["params"] = timm_zoo.param_count(r["name"])
    cols = ["name", "weights"] + (["params"] if counted else [])
    out(args, rows, [{**r, **({"params": f"{r['params'] / 1e6:.1f}M"} if counted else {})} for r in rows], cols)
    if not args.json:
        cached = sum(r["weights"] == "cached" for r in rows)
        print(f"\n{len(rows)} pretrained timm model(s){f' matching {args.filter!r}' if args.filter else ''}, "
              f"{cached} cached in {hub.cache_dir()}"
              + ("" if counted else f"; add a filter for parameter counts (at most {PARAMS_UP_TO} names)")
              + ". Use one as --backbone timm:NAME.")
    return 0


def cmd_datasets(args) -> int:
    from core.train import data

    if args.describe:
        return _describe(args)
    if args.decode:
        return _decode(args)
    rows = [{"name": spec.name, "title": spec.title, "availability": data.availability(spec),
             "description": spec.description} for spec in data.REGISTRY.values()]
    rows.append({"name": "folder:PATH", "title": "Your images", "availability": "local",
                 "description": "A folder with one subfolder per class, or a .zip of them."})
    out(args, rows, rows, ["name", "title", "availability", "description"])
    return 0


def _describe(args) -> int:
    """A dataset's classes and images per class, with a warning when they are far apart."""
    from core.service import forms

    view = forms.preview_folder(args.describe, classes=0)
    rows = [{"class": c, "images": n} for c, n in zip(view.class_names, view.counts)]
    if args.json:
        print(json.dumps({"dataset": args.describe, "images": view.images, "classes": len(rows), "counts": rows,
                          "imbalance": view.imbalance, "warning": view.warning, "layout": view.layout,
                          "skipped": view.skipped}, indent=2))
        return 0
    print(f"{args.describe}: {view.images} images in {len(rows)} classes ({view.layout})")
    print_table(rows, ["class", "images"])
    print(f"largest / smallest class: {view.imbalance:.1f}x")
    if view.warning:
        print(f"warning: {view.warning}")
    return 0


def _decode(args) -> int:
    """Decode a folder at an image size into the data folder's cache, with a progress line, as a first run would."""
    import time

    from core.cli.output import DecodeProgress
    from core.service import forms
    from core.train import data, decode

    state = forms.folder_state(args.decode, args.image_size)
    t0 = time.perf_counter()
    raw = None
    if state.state != "stream":
        with decode.reporting(DecodeProgress()):
            raw = data.load_raw(args.decode, args.image_size)
    result = {"dataset": args.decode, "image_size": args.image_size, "images": state.images,
              "state": "stream" if raw is None else ("decoded now" if state.state == "todo" else "already decoded"),
              "readable": None if raw is None else len(raw.y), "skipped": None if raw is None else raw.skipped,
              "skipped_examples": [] if raw is None else list(raw.skipped_examples),
              "seconds": round(time.perf_counter() - t0, 2), "message": state.message}
    if args.json:
        print(json.dumps(result, indent=2))
    elif raw is None:
        print(state.message)
    else:
        print(f"{args.decode} at {args.image_size} px: {len(raw.y):,} images {result['state']} in {result['seconds']} s"
              + (f"; {raw.skipped} unreadable file(s) skipped: {', '.join(raw.skipped_examples)}" if raw.skipped else ""))
    return 0


def cmd_strategies(args) -> int:
    from core.train import strategies

    rows = [{"name": s.name, "title": s.title, "default_lr": s.default_lr, "pretrained": s.pretrained,
             "description": s.description} for s in strategies.REGISTRY.values()]
    out(args, rows, rows, ["name", "title", "default_lr", "pretrained", "description"])
    return 0


def cmd_plan(args) -> int:
    from core.service import forms

    cfg = run_config(args)
    preview = forms.preview_plan(cfg, args.num_classes, args.epoch)
    spec, plan = preview.spec, preview.plan
    if args.json:
        print(json.dumps({**plan.summary(), "groups": plan.group_table(), "modules": plan.rows(),
                          "note": preview.norm_note}, indent=2))
        return 0
    rows = [{"module": e.module, "group": e.group, "kind": e.kind, "params": f"{e.params:,}",
             "frozen": "frozen" if e.frozen else "trainable", "lr": "-" if e.frozen else f"{e.lr:.2e}"}
            for e in plan.entries]
    print_table(rows, ["module", "group", "kind", "params", "frozen", "lr"])
    print()
    groups = [{**g, "params": f"{g['params']:,}", "frozen": "frozen" if g["frozen"] else "trainable",
               "lr": "-" if g["frozen"] else f"{g['lr']:.2e}"} for g in plan.group_table()]
    print_table(groups, ["group", "modules", "params", "frozen", "lr"])
    print()
    pct = 100.0 * plan.trainable_params / max(1, plan.total_params)
    print(f"{spec.title}, {cfg.strategy} (epoch {args.epoch}): trainable {plan.trainable_params:,} "
          f"of {plan.total_params:,} parameters ({pct:.2f}%), frozen {plan.frozen_params:,}")
    if preview.norm_note:
        print(preview.norm_note)
    return 0


def register(sub) -> None:
    sp = sub.add_parser("backbones", help="list backbones and weight availability; --all: timm's pretrained catalogue")
    sp.add_argument("--all", action="store_true", help="list timm's pretrained models (any of them works as timm:NAME)")
    sp.add_argument("filter", nargs="?", default="", help="with --all (or alone): only names containing this, e.g. convnext")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_backbones)
    for name, fn, helptext in [("datasets", cmd_datasets, "list datasets"),
                               ("strategies", cmd_strategies, "list strategies")]:
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--json", action="store_true")
        if name == "datasets":
            sp.add_argument("--describe", default=None, metavar="NAME",
                            help="a dataset's images per class, with a warning past 3x imbalance (e.g. folder:PATH)")
            sp.add_argument("--decode", default=None, metavar="folder:PATH",
                            help="decode a folder at --image-size into the data folder's cache, with a progress "
                                 "line, so runs start from it")
            sp.add_argument("--image-size", type=int, default=64, help="with --decode: the runs' image size")
        sp.set_defaults(func=fn)

    sp = sub.add_parser("plan", help="show which layers a strategy freezes")
    strategy_options(sp)
    sp.add_argument("--epoch", type=int, default=1, help="the epoch to show (gradual unfreezing changes it)")
    sp.add_argument("--num-classes", type=int, default=10)
    sp.add_argument("--image-size", type=int, default=64)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_plan)
