"""`python -m core ...`: the engine from a terminal. Every command has
`--json` for machine-readable output. Errors print one line and exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from core.errors import TLabError

log = logging.getLogger("core")


def _print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _out(args, obj, rows: list[dict] | None = None, columns: list[str] | None = None) -> None:
    if args.json:
        print(json.dumps(obj, indent=2, default=str))
    elif rows is not None:
        _print_table(rows, columns)


# --- registries -------------------------------------------------------------------


def cmd_backbones(args) -> int:
    from core import backbones, weights

    rows = []
    for spec in backbones.REGISTRY.values():
        rows.append({
            "name": spec.name, "title": spec.title, "family": spec.family,
            "weights": weights.availability(spec),
            "params": spec.param_count(1000 if spec.has_pretrained else 10),
            "input_size": spec.input_size, "groups": len(spec.groups),
            "description": spec.description,
        })
    _out(args, rows, rows, ["name", "title", "weights", "params", "input_size", "groups", "description"])
    return 0


def cmd_datasets(args) -> int:
    from core import data

    rows = [{"name": spec.name, "title": spec.title, "availability": data.availability(spec),
             "description": spec.description} for spec in data.REGISTRY.values()]
    rows.append({"name": "folder:PATH", "title": "Your images", "availability": "local",
                 "description": "A folder with one subfolder per class, or a .zip of them."})
    _out(args, rows, rows, ["name", "title", "availability", "description"])
    return 0


def cmd_strategies(args) -> int:
    from core import strategies

    rows = [{"name": s.name, "title": s.title, "default_lr": s.default_lr, "pretrained": s.pretrained,
             "description": s.description} for s in strategies.REGISTRY.values()]
    _out(args, rows, rows, ["name", "title", "default_lr", "pretrained", "description"])
    return 0


# --- plan / train -------------------------------------------------------------------


def _config(args):
    from core.config import RunConfig, validate

    cfg = RunConfig(
        backbone=args.backbone, strategy=args.strategy, dataset=getattr(args, "dataset", "digits"),
        epochs=getattr(args, "epochs", 3), image_size=getattr(args, "image_size", 64),
        batch_size=getattr(args, "batch_size", 32), lr=args.lr, weight_decay=getattr(args, "weight_decay", 1e-4),
        labels_per_class=getattr(args, "labels_per_class", None), seed=getattr(args, "seed", 0),
        device=getattr(args, "device", "auto"), augment=getattr(args, "augment", False),
        weights=getattr(args, "weights", None), freeze_stages=args.freeze_stages,
        lr_decay=args.lr_decay, unfreeze_every=args.unfreeze_every, name=getattr(args, "name", "") or "",
    )
    return validate(cfg)


def cmd_plan(args) -> int:
    import torch

    from core import backbones, strategies

    cfg = _config(args)
    spec = backbones.get(cfg.backbone)
    with torch.device("meta"):  # a plan needs shapes, not weights or memory
        model = backbones.build(spec, args.num_classes, cfg.image_size)
    plan = strategies.make_plan(spec, model, cfg, args.epoch - 1)
    if args.json:
        print(json.dumps({**plan.summary(), "groups": plan.group_table(), "modules": plan.rows()}, indent=2))
        return 0
    rows = [{"module": e.module, "group": e.group, "kind": e.kind, "params": f"{e.params:,}",
             "frozen": "frozen" if e.frozen else "trainable", "lr": "-" if e.frozen else f"{e.lr:.2e}"}
            for e in plan.entries]
    _print_table(rows, ["module", "group", "kind", "params", "frozen", "lr"])
    print()
    groups = [{**g, "params": f"{g['params']:,}", "frozen": "frozen" if g["frozen"] else "trainable",
               "lr": "-" if g["frozen"] else f"{g['lr']:.2e}"} for g in plan.group_table()]
    _print_table(groups, ["group", "modules", "params", "frozen", "lr"])
    print()
    pct = 100.0 * plan.trainable_params / max(1, plan.total_params)
    print(f"{spec.title}, {cfg.strategy} (epoch {args.epoch}): trainable {plan.trainable_params:,} "
          f"of {plan.total_params:,} parameters ({pct:.2f}%), frozen {plan.frozen_params:,}")
    return 0


class _Progress:
    """A tqdm bar on stderr, fed by engine events."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, event) -> None:
        from core import engine

        if not self.enabled:
            return
        if isinstance(event, engine.RunStart):
            from tqdm import tqdm

            total = event.steps_per_epoch * event.config.epochs
            self.bar = tqdm(total=total, initial=event.steps_per_epoch * (event.start_epoch - 1),
                            desc=f"{event.config.backbone}/{event.config.strategy}", unit="step",
                            file=sys.stderr, dynamic_ncols=True, leave=False)
        elif isinstance(event, engine.Step) and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}", refresh=False)
        elif isinstance(event, engine.EpochEnd) and self.bar is not None:
            self.bar.write(f"epoch {event.epoch}: train loss {event.train_loss:.4f} acc {event.train_accuracy:.3f} | "
                           f"val loss {event.val_loss:.4f} acc {event.val_accuracy:.3f} | {event.seconds:.1f}s",
                           file=sys.stderr)
        elif isinstance(event, engine.Note):
            print(event.message, file=sys.stderr)
        elif isinstance(event, engine.RunEnd) and self.bar is not None:
            self.bar.close()


def cmd_train(args) -> int:
    from core import engine

    cfg = _config(args)
    result = engine.train(cfg, listeners=(_Progress(not args.no_progress),))
    out = result.to_dict()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"run {result.run_id}: {result.status}{' (' + result.reason + ')' if result.reason else ''}")
        if result.test_accuracy is not None:
            print(f"test accuracy {result.test_accuracy:.4f}, val accuracy {result.val_accuracy:.4f} after "
                  f"{result.epochs} epoch(s) in {result.seconds:.1f}s ({result.images_per_second:.0f} images/s "
                  f"on {result.device}{', feature cache' if result.feature_cache else ''})")
        print(f"trainable {result.trainable_params:,} of {result.total_params:,} parameters; checkpoint {result.checkpoint}")
    if result.status == "failed":
        print(f"error: {result.reason}", file=sys.stderr)
        return 1
    return 0 if result.status == "finished" else 3


# --- parser -------------------------------------------------------------------------


def _labels(value: str) -> int | None:
    if value.lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"labels per class must be a whole number or 'all' (got {value!r})") from None


def _strategy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="efficientnet_lite0", help="backbone name (see `backbones`)")
    p.add_argument("--strategy", default="full", help="strategy name (see `strategies`)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the strategy's)")
    p.add_argument("--freeze-stages", type=int, default=2, help="partial: stem + K body groups frozen (default 2)")
    p.add_argument("--lr-decay", type=float, default=0.5, help="discriminative: LR factor per group, head to stem")
    p.add_argument("--unfreeze-every", type=int, default=1, help="gradual: epochs between unfreezing groups")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line and exit 2, like TLabError
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m core", description="Transfer Learning Lab engine")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, fn, helptext in [("backbones", cmd_backbones, "list backbones and weight availability"),
                               ("datasets", cmd_datasets, "list datasets"),
                               ("strategies", cmd_strategies, "list strategies")]:
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=fn)

    sp = sub.add_parser("plan", help="show which layers a strategy freezes")
    _strategy_options(sp)
    sp.add_argument("--epoch", type=int, default=1, help="the epoch to show (gradual unfreezing changes it)")
    sp.add_argument("--num-classes", type=int, default=10)
    sp.add_argument("--image-size", type=int, default=64)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_plan)

    sp = sub.add_parser("train", help="train one run in the foreground")
    _strategy_options(sp)
    sp.add_argument("--dataset", default="digits", help="dataset name or folder:PATH")
    sp.add_argument("--epochs", type=int, default=3)
    sp.add_argument("--image-size", type=int, default=64)
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--weight-decay", type=float, default=1e-4)
    sp.add_argument("--labels-per-class", type=_labels, default=None, help="K training images per class, or 'all'")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    sp.add_argument("--augment", action="store_true", help="random flip, resized crop and colour jitter")
    sp.add_argument("--weights", default=None, help="a weights file (state dict) to start from")
    sp.add_argument("--name", default="", help="a name for the run")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except TLabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
