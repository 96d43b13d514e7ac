"""`backbones`, `datasets`, `strategies`: the registries; `plan`: which layers
a strategy freezes, per module and per group."""

from __future__ import annotations

import json

from core.cli.options import run_config, strategy_options
from core.cli.output import out, print_table


def cmd_backbones(args) -> int:
    from core.train import backbones, weights

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


def cmd_datasets(args) -> int:
    from core.train import data

    rows = [{"name": spec.name, "title": spec.title, "availability": data.availability(spec),
             "description": spec.description} for spec in data.REGISTRY.values()]
    rows.append({"name": "folder:PATH", "title": "Your images", "availability": "local",
                 "description": "A folder with one subfolder per class, or a .zip of them."})
    out(args, rows, rows, ["name", "title", "availability", "description"])
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
        print(json.dumps({**plan.summary(), "groups": plan.group_table(), "modules": plan.rows()}, indent=2))
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
    return 0


def register(sub) -> None:
    for name, fn, helptext in [("backbones", cmd_backbones, "list backbones and weight availability"),
                               ("datasets", cmd_datasets, "list datasets"),
                               ("strategies", cmd_strategies, "list strategies")]:
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=fn)

    sp = sub.add_parser("plan", help="show which layers a strategy freezes")
    strategy_options(sp)
    sp.add_argument("--epoch", type=int, default=1, help="the epoch to show (gradual unfreezing changes it)")
    sp.add_argument("--num-classes", type=int, default=10)
    sp.add_argument("--image-size", type=int, default=64)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_plan)
