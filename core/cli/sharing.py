"""Runs taken to other places: `pack` / `unpack` (finished runs between data
folders, as one ZIP) and `export-mlflow` (runs logged to an MLflow tracking store)."""

from __future__ import annotations

import json


def cmd_pack(args) -> int:
    from core.runs import portable

    out = portable.pack(args.run_ids, args.out)
    info = {"out": str(out), "runs": args.run_ids, "megabytes": round(out.stat().st_size / 1e6, 3)}
    print(json.dumps(info) if args.json else f"packed {len(args.run_ids)} run(s) -> {out} ({info['megabytes']:.2f} MB)")
    return 0


def cmd_unpack(args) -> int:
    from core import paths
    from core.runs import portable

    ids = portable.unpack(args.pack)
    print(json.dumps({"runs": ids}) if args.json else f"unpacked {len(ids)} run(s) into {paths.home()}: {', '.join(ids)}")
    return 0


def cmd_export_mlflow(args) -> int:
    from core.service import tracking

    out = tracking.export_runs(args.run_ids, args.tracking_uri, args.experiment)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in out["runs"]:
            print(f"{r['run_id']} -> MLflow run {r['mlflow_run_id']} ({r['metrics']} metric points, {r['artifacts']} artifacts)")
        print(f"tracking store: {out['tracking_uri']}, experiment {out['experiment']!r}")
    return 0


def register(sub) -> None:
    sp = sub.add_parser("pack", help="finished runs (store rows, checkpoints, settings, TensorBoard events) as one ZIP")
    sp.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    sp.add_argument("--out", required=True, help="the ZIP to write, e.g. runs.zip")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_pack)

    sp = sub.add_parser("unpack", help="add the runs of a pack (from `pack`) to this data folder")
    sp.add_argument("pack", help="the pack's ZIP")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_unpack)

    sp = sub.add_parser("export-mlflow", help="log runs to MLflow: params, metrics with steps, tags, checkpoint and "
                                              "export bundle (needs `pip install mlflow`)")
    sp.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    sp.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, or "
                                                         "an mlruns folder in the data folder)")
    sp.add_argument("--experiment", default="transfer-learning-lab", help="MLflow experiment name")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_export_mlflow)
