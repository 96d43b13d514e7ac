"""`python -m core ...`: the engine from a terminal. Every command has
`--json` for machine-readable output. Errors print one line and exit 2."""

from __future__ import annotations

import argparse
import importlib
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
        processes=getattr(args, "processes", None) or 1,
        compile=getattr(args, "compile", False),
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


def _result_of(row: dict) -> dict:
    result = row.get("result")
    result = json.loads(result) if isinstance(result, str) else (result or {})
    return {"run_id": row["id"], **result, "status": row["status"], "reason": row["reason"]}


def _finish(args, row: dict) -> int:
    """Print how a run ended; exit 0 finished, 1 failed in training, 2 could not
    start (bad data or weights), 3 cancelled or interrupted."""
    out = _result_of(row)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"run {row['id']}: {row['status']}{' (' + row['reason'] + ')' if row['reason'] else ''}")
        if out.get("test_accuracy") is not None:
            print(f"test accuracy {out['test_accuracy']:.4f}, val accuracy {out['val_accuracy']:.4f} after "
                  f"{out['epochs']} epoch(s) in {out['seconds']:.1f}s ({out['images_per_second']:.0f} images/s "
                  f"on {out['device']}{', feature cache' if out.get('feature_cache') else ''})")
        if out.get("checkpoint"):
            print(f"trainable {out['trainable_params']:,} of {out['total_params']:,} parameters; checkpoint {out['checkpoint']}")
    if row["status"] == "failed":
        print(f"error: {row['reason']}", file=sys.stderr)
        return 1 if row.get("result") else 2
    return 0 if row["status"] == "finished" else 3


def cmd_train(args) -> int:
    from core import cli_distributed, jobs

    cfg = cli_distributed.train_config(args, _config(args))
    if cfg.processes > 1 and not cli_distributed.under_torchrun():
        return cli_distributed.train_with_torchrun(cfg.processes, args.argv)
    row = jobs.run_foreground(cfg, listeners=(_Progress(not args.no_progress),))
    if row is None:
        return 0  # another process of a torchrun group: rank 0 reports the run
    return _finish(args, row)


def cmd_launch(args) -> int:
    from core import jobs

    run_id = jobs.launch(_config(args))
    print(json.dumps({"run_id": run_id, "status": "queued"}) if args.json else run_id)
    return 0


def cmd_runs(args) -> int:
    from core.store import Store

    df = Store().runs()
    rows = [{k: (None if v != v else v) for k, v in r.items() if k != "config"} for r in df.to_dict("records")]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        for k in ("best_val_accuracy", "test_accuracy"):
            r[k] = f"{r[k]:.4f}" if r[k] is not None else "-"
    _print_table(rows, ["id", "status", "backbone", "strategy", "dataset", "epochs_done", "epochs",
                        "best_val_accuracy", "test_accuracy", "group_id", "reason"])
    return 0


def cmd_show(args) -> int:
    from core.store import Store

    store = Store()
    row = store.run(args.run_id)
    epochs = store.metrics([args.run_id])
    out = {
        "run_id": row["id"], "group_id": row["group_id"], "name": row["name"], "status": row["status"],
        "reason": row["reason"], "device": row["device"], "config": json.loads(row["config"]),
        "epochs_done": row["epochs_done"], "best_val_accuracy": row["best_val_accuracy"],
        "test_accuracy": row["test_accuracy"],
        "last_epoch": epochs.iloc[-1].to_dict() if len(epochs) else None,
        "result": json.loads(row["result"]) if row["result"] else None,
    }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"run {out['run_id']} ({out['status']}{': ' + out['reason'] if out['reason'] else ''})")
    print("config: " + ", ".join(f"{k}={v}" for k, v in out["config"].items() if v not in (None, "")))
    if len(epochs):
        _print_table([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items() if k not in ("run_id", "t")}
                      for r in epochs.to_dict("records")],
                     ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"])
    if out["test_accuracy"] is not None:
        print(f"test accuracy {out['test_accuracy']:.4f}")
    return 0


def cmd_wait(args) -> int:
    from core import jobs

    return _finish(args, jobs.wait(args.run_id, timeout=args.timeout))


def cmd_cancel(args) -> int:
    from core import jobs

    status = jobs.cancel(args.run_id)
    print(f"run {args.run_id}: " + ("cancelled" if status == "queued" else "stopping at its next step"))
    return 0


def cmd_resume(args) -> int:
    from core import jobs

    jobs.resume(args.run_id, processes=args.processes)
    print(f"run {args.run_id}: queued to resume from its last checkpoint"
          + (f" on {args.processes} process(es)" if args.processes else ""))
    return 0


def _group_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        r = _result_of(row)
        cfg = json.loads(row["config"])
        out.append({"run_id": row["id"], "strategy": cfg["strategy"], "backbone": cfg["backbone"],
                    "labels_per_class": cfg["labels_per_class"], "seed": cfg["seed"], "status": row["status"],
                    "test_accuracy": r.get("test_accuracy"), "best_val_accuracy": r.get("best_val_accuracy"),
                    "trainable_params": r.get("trainable_params"), "seconds": r.get("seconds")})
    return out


def _fmt(rows: list[dict]) -> list[dict]:
    return [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def cmd_race(args) -> int:
    from core import experiments

    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    cfgs = experiments.race_configs(_config(args), names)
    group, ids = experiments.launch(experiments.RACE, cfgs)
    print(f"race {group}: {len(ids)} runs queued ({', '.join(names)})", file=sys.stderr)
    rows = _group_rows(experiments.wait_all(ids))
    if args.json:
        print(json.dumps({"group_id": group, "runs": rows}, indent=2))
    else:
        _print_table(_fmt(rows), ["strategy", "status", "test_accuracy", "best_val_accuracy", "trainable_params", "seconds", "run_id"])
    return 0 if all(r["status"] == "finished" for r in rows) else 1


def cmd_sweep(args) -> int:
    from core import experiments
    from core.store import Store

    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    cfgs = experiments.sweep_configs(_config(args), names, experiments.parse_labels(args.labels), args.seeds, args.steps)
    group, ids = experiments.launch(experiments.SWEEP, cfgs)
    print(f"sweep {group}: {len(ids)} runs queued", file=sys.stderr)
    rows = experiments.wait_all(ids)
    summary = experiments.summarise_sweep(Store().runs(group))
    out = summary.to_dict("records")
    if args.json:
        print(json.dumps({"group_id": group, "rows": out}, indent=2, default=str))
    else:
        _print_table(_fmt(out), ["strategy", "labels_per_class", "mean", "std", "n"])
    return 0 if all(r["status"] == "finished" for r in rows) else 1


def cmd_distill(args) -> int:
    from core import distill, experiments
    from core.store import Store

    store = Store()
    teacher = store.run(args.teacher)
    cfgs = experiments.distill_configs(teacher, args.student, args.temperature, args.alpha, args.epochs, args.image_size)
    group, ids = experiments.launch(experiments.DISTILL, cfgs, store)
    print(f"distill {group}: student {args.student} with and without teacher {args.teacher}", file=sys.stderr)
    kd, alone = experiments.wait_all(ids, store)
    out = {"group_id": group}
    for role, row in (("teacher", teacher), ("student_kd", kd), ("student", alone)):
        if row["status"] != "finished":
            print(f"error: {role} run {row['id']} {row['status']}: {row['reason']}", file=sys.stderr)
            return 1
        out[role] = distill.profile(row["id"], row["test_accuracy"])
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_table([{"role": r, **_fmt([out[r]])[0]} for r in ("teacher", "student_kd", "student")],
                     ["role", "backbone", "test_accuracy", "params", "model_mb", "latency_ms", "run_id"])
    return 0


def cmd_worker(args) -> int:
    from core import jobs

    logging.getLogger("core").setLevel(logging.INFO)  # worker.log tells which runs it took and how they ended

    return jobs.worker_main()


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


# Modules that hold commands of their own: each has `register(sub)`, which adds its
# subparsers (with `set_defaults(func=...)`) to this CLI.
COMMAND_MODULES: tuple[str, ...] = (
    "cli_predict",
    "cli_inspect",  # explain, evaluate, embed, filters, feature-maps, lr-find, export
    "cli_distributed",  # run-rank: one process of a run under torchrun
    "cli_advise",
    "cli_adapt",
    "cli_skipdemo",
)


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

    for name, fn, helptext in [("train", cmd_train, "train one run in the foreground"),
                               ("launch", cmd_launch, "queue a run for the background worker; prints its id")]:
        sp = sub.add_parser(name, help=helptext)
        _train_options(sp)
        sp.set_defaults(func=fn)

    sp = sub.add_parser("race", help="one backbone and dataset under several strategies, same budget")
    _train_options(sp)
    sp.add_argument("--strategies", default="feature_extraction,full,scratch", help="comma-separated strategies")
    sp.set_defaults(func=cmd_race)

    sp = sub.add_parser("sweep-labels", help="test accuracy vs labels per class, transfer vs scratch, several seeds")
    _train_options(sp)
    sp.add_argument("--strategies", default="full,scratch", help="comma-separated strategies")
    sp.add_argument("--labels", default="1,5,10,25,50,all", help="labels per class to try, comma-separated; 'all' for all")
    sp.add_argument("--seeds", type=int, default=3, help="seeds per point")
    sp.add_argument("--steps", type=int, default=100, help="optimisation steps per run, whatever the labels")
    sp.set_defaults(func=cmd_sweep, image_size=48)

    sp = sub.add_parser("distill", help="a student learns from a finished teacher run; the student alone as twin")
    sp.add_argument("--teacher", required=True, help="the teacher's run id (a finished run)")
    sp.add_argument("--student", default="small_cnn", help="student backbone")
    sp.add_argument("--temperature", type=float, default=4.0)
    sp.add_argument("--alpha", type=float, default=0.9, help="weight of the teacher's soft targets")
    sp.add_argument("--epochs", type=int, default=None, help="default: the teacher's")
    sp.add_argument("--image-size", type=int, default=None, help="default: the teacher's")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_distill)

    sp = sub.add_parser("runs", help="list the runs in the store")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_runs)
    for name, fn, helptext in [("show", cmd_show, "a run's config, status and metrics"),
                               ("wait", cmd_wait, "block until a run ends; print its result"),
                               ("cancel", cmd_cancel, "stop a run at its next step"),
                               ("resume", cmd_resume, "continue an interrupted, cancelled or failed run")]:
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("run_id")
        sp.add_argument("--json", action="store_true")
        if name == "wait":
            sp.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
        if name == "resume":
            sp.add_argument("--processes", type=int, default=None,
                            help="continue on this many processes (default: as before); any number resumes a checkpoint")
        sp.set_defaults(func=fn)
    sp = sub.add_parser("worker", help="drain the run queue (started for you by launch)")
    sp.set_defaults(func=cmd_worker)
    for module in COMMAND_MODULES:  # imported here, not at the top: they may import this module
        importlib.import_module(f"core.{module}").register(sub)
    return p


def _train_options(sp: argparse.ArgumentParser) -> None:
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
    sp.add_argument("--compile", action="store_true",
                    help="torch.compile the model: a slower start, faster steps after (mostly on a GPU)")
    sp.add_argument("--name", default="", help="a name for the run")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--processes", type=int, default=None,
                    help="train over N processes with DDP, one per GPU (started with torchrun); "
                         "--batch-size is the global batch. Default: 1, or torchrun's process count under torchrun")
    sp.add_argument("--json", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
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
    except BrokenPipeError:  # `... | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0
    except MemoryError:
        print("error: out of memory: try a smaller batch size or image size, or fewer images.", file=sys.stderr)
        return 1
    except Exception as e:  # a bug or an environment problem: one line, the traceback only with -v
        if args.verbose:
            log.exception("unexpected error")
        reason = " ".join(str(e).split())[:300] or "no message"
        print(f"error: unexpected {type(e).__name__}: {reason}. Run again with -v (`python -m core -v ...`) "
              "to see where it happened, and report it.", file=sys.stderr)
        return 1
