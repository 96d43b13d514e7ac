"""Experiment groups from a terminal: `race` (strategies side by side),
`sweep-labels` (accuracy against labels per class) and `distill` (a student
with and without its teacher). Each queues its runs and waits for them."""

from __future__ import annotations

import json
import sys

from core.cli.options import config_file_option, given, run_configs, settings_file, train_options
from core.cli.output import fmt, print_table, result_of


def group_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        r = result_of(row)
        cfg = json.loads(row["config"])
        out.append({"run_id": row["id"], "strategy": cfg["strategy"], "backbone": cfg["backbone"],
                    "labels_per_class": cfg["labels_per_class"], "seed": cfg["seed"], "status": row["status"],
                    "test_accuracy": r.get("test_accuracy"), "best_val_accuracy": r.get("best_val_accuracy"),
                    "trainable_params": r.get("trainable_params"), "seconds": r.get("seconds")})
    return out


SWEEP_IMAGE_SIZE = 48  # sweep-labels' own default: many short runs


def _listed_or(args, defaults: dict | None = None) -> tuple[list, bool]:
    """With a group file (`--config`), its runs as listed (flags over each) and
    True; otherwise the one base run the command builds its group from, and False."""
    cfgs, kind = run_configs(args, check=False, defaults=defaults)
    return cfgs, len(cfgs) > 1 or bool(kind)


def cmd_race(args) -> int:
    from core.runs import experiments

    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    from core.service import launching

    cfgs, listed = _listed_or(args)
    cfgs = cfgs if listed else experiments.race_configs(cfgs[0], names)
    group, ids = launching.launch(launching.prepare(cfgs, experiments.RACE))
    print(f"race {group}: {len(ids)} runs queued ({', '.join(names)})", file=sys.stderr)
    rows = group_rows(experiments.wait_all(ids))
    if args.json:
        print(json.dumps({"group_id": group, "runs": rows}, indent=2))
    else:
        print_table(fmt(rows), ["strategy", "status", "test_accuracy", "best_val_accuracy", "trainable_params", "seconds", "run_id"])
    return 0 if all(r["status"] == "finished" for r in rows) else 1


def cmd_sweep(args) -> int:
    from core.runs import experiments
    from core.runs.store import Store

    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    from core.service import launching

    cfgs, listed = _listed_or(args, defaults={"image_size": SWEEP_IMAGE_SIZE})
    if not listed:
        cfgs = experiments.sweep_configs(cfgs[0], names, experiments.parse_labels(args.labels), args.seeds, args.steps)
    group, ids = launching.launch(launching.prepare(cfgs, experiments.SWEEP))
    print(f"sweep {group}: {len(ids)} runs queued", file=sys.stderr)
    rows = experiments.wait_all(ids)
    summary = experiments.summarise_sweep(Store().runs(group))
    out = summary.to_dict("records")
    if args.json:
        print(json.dumps({"group_id": group, "rows": out}, indent=2, default=str))
    else:
        print_table(fmt(out), ["strategy", "labels_per_class", "mean", "std", "n"])
    return 0 if all(r["status"] == "finished" for r in rows) else 1


def cmd_distill(args) -> int:
    from core.runs import experiments
    from core.runs.store import Store
    from core.service import launching
    from core.train import distill

    store = Store()
    sf = settings_file(args)
    if sf is not None and sf.group:  # a group file: its runs as listed, the teacher the one they name
        cfgs, _ = run_configs(args, check=False)
        args.teacher = args.teacher or cfgs[0].teacher
    else:  # a run file (the student's settings) fills what the flags leave out
        f = {**(sf.runs[0] if sf else {}), **given(args)}
        args.teacher = args.teacher or f.get("teacher")
        cfgs = None
    if not args.teacher:
        from core.errors import ConfigError

        raise ConfigError("distill needs a teacher: --teacher RUN_ID (a finished run), or `teacher = \"RUN_ID\"` in the --config file.")
    teacher = store.run(args.teacher)
    if cfgs is None:
        cfgs = experiments.distill_configs(teacher, args.student or f.get("backbone") or "small_cnn",
                                           args.temperature or f.get("temperature") or 4.0,
                                           f.get("alpha", 0.9) if args.alpha is None else args.alpha,
                                           args.epochs or f.get("epochs"), args.image_size or f.get("image_size"))
    group, ids = launching.launch(launching.prepare(cfgs, experiments.DISTILL), store)
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
        print_table([{"role": r, **fmt([out[r]])[0]} for r in ("teacher", "student_kd", "student")],
                    ["role", "backbone", "test_accuracy", "params", "model_mb", "latency_ms", "run_id"])
    return 0


def register(sub) -> None:
    sp = sub.add_parser("race", help="one backbone and dataset under several strategies, same budget")
    train_options(sp, group_file=True)
    sp.add_argument("--strategies", default="feature_extraction,full,scratch", help="comma-separated strategies")
    sp.set_defaults(func=cmd_race)

    sp = sub.add_parser("sweep-labels", help="test accuracy vs labels per class, transfer vs scratch, several seeds")
    train_options(sp, skip=("steps",), group_file=True)
    sp.add_argument("--strategies", default="full,scratch", help="comma-separated strategies")
    sp.add_argument("--labels", default="1,5,10,25,50,all", help="labels per class to try, comma-separated; 'all' for all")
    sp.add_argument("--seeds", type=int, default=3, help="seeds per point")
    sp.add_argument("--steps", type=int, default=100, help="optimisation steps per run, whatever the labels")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("distill", help="a student learns from a finished teacher run; the student alone as twin")
    sp.add_argument("--teacher", default=None, help="the teacher's run id (a finished run)")
    sp.add_argument("--student", default=None, help="student backbone (default: small_cnn)")
    sp.add_argument("--temperature", type=float, default=None, help="default: 4")
    sp.add_argument("--alpha", type=float, default=None, help="weight of the teacher's soft targets (default: 0.9)")
    sp.add_argument("--epochs", type=int, default=None, help="default: the teacher's")
    sp.add_argument("--image-size", type=int, default=None, help="default: the teacher's")
    config_file_option(sp, "the student's run file (teacher, backbone, temperature, alpha, epochs, image_size), "
                           "or a group file listing the two runs")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_distill)
