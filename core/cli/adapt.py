"""`python -m core adapt`: adapt a finished run to an unlabelled target domain
(core.lessons.adapt: AdaBN or DANN)."""

from __future__ import annotations

import json
import sys


def cmd_adapt(args) -> int:
    from core.lessons import adapt

    def progress(step: int, label_loss: float, domain_loss: float) -> None:
        if not args.json and (step % 20 == 0 or step == args.steps):
            print(f"step {step}/{args.steps}: label loss {label_loss:.3f}, domain loss {domain_loss:.3f}", file=sys.stderr)

    result = adapt.adapt(args.run, args.target, args.method, args.steps, args.seed, args.lr, on_step=progress)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
        return 0

    def pct(v):
        return "n/a (no labels)" if v is None else f"{v:.4f}"

    print(f"run {result.run_id} -> {result.target} by {result.method} in {result.seconds:.1f}s"
          + (f" ({result.steps} steps)" if result.steps else ""))
    print(f"source accuracy  {pct(result.source_accuracy)}")
    print(f"target before    {pct(result.target_before)}")
    print(f"target after     {pct(result.target_after)}")
    print(f"feature gap between the domains: {result.gap_before:.3f} before, {result.gap_after:.3f} after; "
          f"{result.changed_predictions} target prediction(s) changed")
    if result.note:
        print(f"note: {result.note}")
    print(f"saved {result.saved}")
    return 0


def register(sub) -> None:
    from core.lessons import ADAPT_METHODS as METHODS, DANN_STEPS  # not core.lessons.adapt: torch

    sp = sub.add_parser("adapt", help="adapt a finished run to a target domain without its labels (AdaBN, DANN)")
    sp.add_argument("--run", required=True, help="the run id (a finished run)")
    sp.add_argument("--target", default="digits_shifted",
                    help="a dataset (its labels only score) or folder:PATH of unlabelled images")
    sp.add_argument("--method", choices=METHODS, default="adabn")
    sp.add_argument("--steps", type=int, default=DANN_STEPS, help="DANN: training steps")
    sp.add_argument("--lr", type=float, default=1e-4, help="DANN: learning rate of the backbone")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_adapt)
