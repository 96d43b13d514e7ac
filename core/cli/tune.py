"""`tune`: a hyperparameter search (an Optuna study) whose trials are runs of the lab."""

from __future__ import annotations

import json
import sys

from core.cli.options import given, run_config, train_options
from core.cli.output import fmt, print_table


def cmd_tune(args) -> int:
    from core.runs import tune, tune_space

    if args.show:
        out = tune.summary(tune.load(args.study, args.storage))
    else:
        from core.errors import ConfigError

        fixed = tuple(given(args))
        if "strategy" in fixed:
            raise ConfigError("tune chooses among strategies: give them as --strategies full,partial (not --strategy).")
        base = run_config(args, check=False)
        names = [n.strip() for n in args.strategies.split(",") if n.strip()]
        space = tune_space.read_space(args.space) if args.space else None
        tuner = tune.Tuner(base, names, args.trials, args.study, args.storage, args.workers, args.timeout, space,
                           args.pruner, fixed)
        print(f"study {args.study}: up to {args.trials} trials, {args.workers} at a time "
              f"({tuner.counted(tuner.open())} already)", file=sys.stderr)
        out = tuner.run()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    rows = [{"trial": r["trial"], "state": r["state"], "best_val_accuracy": r["value"], "epochs": r["epochs"],
             "params": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()),
             "run_id": r["run_id"]} for r in out["runs"]]
    print_table(fmt(rows), ["trial", "state", "best_val_accuracy", "epochs", "params", "run_id"])
    best = out["best"]
    print(f"{out['trials']} trials: {out['complete']} complete, {out['pruned']} pruned, {out['fail']} failed"
          + (f"; best: trial {best['trial']}, val accuracy {best['best_val_accuracy']:.4f}, run {best['run_id']}"
             if best else ""))
    return 0


def register(sub) -> None:
    sp = sub.add_parser("tune", help="hyperparameter search (Optuna): trials are runs, pruned early, resumable")
    train_options(sp, skip=("name",))  # a flag given fixes that setting for every trial
    sp.add_argument("--strategies", default="full,partial,discriminative",
                    help="comma-separated strategies the search chooses among")
    sp.add_argument("--trials", type=int, default=20, help="the study's total number of trials (run again to continue)")
    sp.add_argument("--study", default="study", help="study name (default: study)")
    sp.add_argument("--storage", default=None, help="an Optuna storage URL shared by several machines, e.g. "
                                                    "postgresql://user@host/db, or journal:PATH (default: a "
                                                    "journal file in the data folder's tune/)")
    sp.add_argument("--space", default=None, help="a TOML search space (see the README); default: one per strategy")
    sp.add_argument("--workers", type=int, default=1, help="trials training at once on this machine")
    sp.add_argument("--timeout", type=float, default=None, help="start no new trial after this many seconds")
    sp.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"))
    sp.add_argument("--show", action="store_true", help="print the study's trials and best so far; start nothing")
    sp.set_defaults(func=cmd_tune)
