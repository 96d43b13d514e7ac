"""`python -m core predict --run RUN_ID --image PATH [--json]`: a trained run's
top-5 classes for one image, preprocessed exactly as on the Predict page
(both call core.insight.predict)."""

from __future__ import annotations

import argparse
import json

from core import paths
from core.runs.store import Store

TOP_K = 5


def cmd_predict(args) -> int:
    # Imported here, not at the top: torch comes with them, and every `python -m core` command (runs, wait,
    # cancel...) imports this module to list its subcommand: 2.4 s of CPU each for nothing.
    from core.insight import predict
    from core.train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_run_model

    run_id = paths.check_run_id(args.run)  # before any path is built from it
    row = Store().run(run_id)
    if row["status"] in ("queued", "running") and not (paths.run_dir(run_id) / CHECKPOINT_NAME).exists():
        raise CheckpointError(f"Run {run_id} is {row['status']} and has no checkpoint yet: "
                                      f"wait for its first epoch (`python -m core wait {run_id}`).")
    loaded = load_run_model(paths.run_dir(run_id), args.weights)
    top = predict.predict(loaded, args.image, k=args.top, calibrated=not args.raw, tta=args.tta)
    cal = predict.calibrated(loaded) and not args.raw
    if args.json:
        print(json.dumps({"run_id": run_id, "image": args.image, "epoch": loaded.epoch, "weights": loaded.which,
                          "calibrated": cal, "temperature": loaded.temperature if cal else None, "tta": args.tta,
                          "top": [{"class": c, "probability": p} for c, p in top]}, indent=2))
        return 0
    width = max(len(c) for c, _ in top)
    print(f"run {run_id} ({loaded.spec.title}, {loaded.num_classes} classes, epoch {loaded.epoch}'s weights, "
          f"{'calibrated probabilities, T=' + format(loaded.temperature, '.3g') if cal else 'uncalibrated probabilities'}"
          f"{', flip TTA' if args.tta else ''}): {args.image}")
    for c, p in top:
        print(f"  {c.ljust(width)}  {p:7.2%}  {'#' * round(p * 40)}")
    return 0


def _top(value: str) -> int:
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"--top must be a whole number of at least 1 (got {value!r})")
    return k


def register(sub) -> None:
    sp = sub.add_parser("predict", help="a trained run's top-5 classes for one image")
    sp.add_argument("--run", required=True, help="the run's id (see `runs`); it needs a checkpoint")
    sp.add_argument("--image", required=True, help="an image file (PNG, JPEG, WebP, BMP, ...)")
    sp.add_argument("--top", type=_top, default=TOP_K, help=f"how many classes to show (default {TOP_K})")
    sp.add_argument("--weights", choices=("best", "last"), default=None,
                    help="the best validation epoch's weights or the last's (default: the run's choice, best)")
    sp.add_argument("--raw", action="store_true", help="the network's own probabilities, not temperature-scaled")
    sp.add_argument("--tta", action="store_true", help="average with the mirror image (test-time augmentation)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_predict)
