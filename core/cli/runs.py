"""The run store and queue from a terminal: `runs`, `show`, `wait`, `cancel`,
`resume`, and `worker` (the background process that drains the queue)."""

from __future__ import annotations

import json
import logging

from core.cli.output import RECIPE_FIELDS, finish, print_table, recipe_lines


def cmd_runs(args) -> int:
    from core.runs.store import Store

    df = Store().runs()
    rows = [{k: (None if v != v else v) for k, v in r.items() if k != "config"} for r in df.to_dict("records")]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        for k in ("best_val_accuracy", "test_accuracy"):
            r[k] = f"{r[k]:.4f}" if r[k] is not None else "-"
    print_table(rows, ["id", "status", "backbone", "strategy", "dataset", "epochs_done", "epochs",
                       "best_val_accuracy", "test_accuracy", "group_id", "reason"])
    return 0


def cmd_show(args) -> int:
    from core import paths
    from core.runs import storage
    from core.runs.store import Store

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
        "slimmed": storage.slimmed_marker(paths.run_dir(row["id"])).exists(),  # `slim`: can no longer resume
    }
    result = out["result"] or {}
    out.update({k: result.get(k) for k in RECIPE_FIELDS})
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"run {out['run_id']} ({out['status']}{': ' + out['reason'] if out['reason'] else ''})")
    print("config: " + ", ".join(f"{k}={v}" for k, v in out["config"].items() if v not in (None, "")))
    if len(epochs):
        print_table([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items() if k not in ("run_id", "t")}
                     for r in epochs.to_dict("records")],
                    ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"])
    if out["test_accuracy"] is not None:
        print(f"test accuracy {out['test_accuracy']:.4f}")
    if out["slimmed"]:
        print("checkpoint slimmed (optimizer state dropped): it predicts, evaluates and exports, but can no longer resume")
    recipe_lines(out)
    return 0


def cmd_wait(args) -> int:
    from core.runs import jobs

    return finish(args, jobs.wait(args.run_id, timeout=args.timeout))


def cmd_cancel(args) -> int:
    from core.runs import jobs

    status = jobs.cancel(args.run_id)
    print(f"run {args.run_id}: " + ("cancelled" if status == "queued" else "stopping at its next step"))
    return 0


def cmd_resume(args) -> int:
    from core.runs import jobs

    jobs.resume(args.run_id, processes=args.processes)
    print(f"run {args.run_id}: queued to resume from its last checkpoint"
          + (f" on {args.processes} process(es)" if args.processes else ""))
    return 0


def cmd_worker(args) -> int:
    from core.runs import jobs

    logging.getLogger("core").setLevel(logging.INFO)  # worker.log tells which runs it took and how they ended

    return jobs.worker_main()


def register(sub) -> None:
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
