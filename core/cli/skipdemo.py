"""`python -m core skip-demo`: plain vs residual stacks at several depths
(core.lessons.skipdemo)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.cli.output import fmt, print_table
from core.errors import ConfigError


def _depths(text: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"--depths takes whole numbers separated by commas, e.g. 8,20,56 (got {text!r}).") from None
    if not depths:
        raise ConfigError("--depths needs at least one depth, e.g. 8,20,56.")
    return depths


def cmd_skip_demo(args) -> int:
    from core.lessons import skipdemo

    def progress(r) -> None:
        print(f"depth {r.depth} {'residual' if r.residual else 'plain'}: final loss {r.final_loss:.3f} "
              f"({r.seconds:.1f}s)", file=sys.stderr)

    results = skipdemo.run(_depths(args.depths), args.steps, not args.no_batchnorm, args.seed, on_result=progress)
    rows = [r.row() for r in results]
    out = {"steps": args.steps, "batchnorm": not args.no_batchnorm, "rows": rows,
           "curves": [{"depth": r.depth, "residual": r.residual, "losses": r.losses,
                       "layer_grad_norms": r.layer_grad_norms} for r in results]}
    if args.out:
        path = Path(args.out)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "curves" or args.curves}, indent=2))
    else:
        print_table(fmt(rows), ["depth", "residual", "batchnorm", "final_loss", "first_layer_grad_norm",
                                  "grad_norm_spread", "params", "seconds"])
    return 0


def register(sub) -> None:
    from core.lessons import SKIP_DEPTHS as DEPTHS, SKIP_STEPS as STEPS  # not core.lessons.skipdemo: torch

    sp = sub.add_parser("skip-demo", help="plain vs residual stacks: training loss and gradient norms by depth")
    sp.add_argument("--depths", default=",".join(map(str, DEPTHS)), help="6n+2 depths, comma-separated")
    sp.add_argument("--steps", type=int, default=STEPS, help="SGD steps per net")
    sp.add_argument("--no-batchnorm", action="store_true", help="the same stacks without BatchNorm")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--curves", action="store_true", help="with --json: include per-step losses and per-layer norms")
    sp.add_argument("--out", default=None, help="also write the full result (with curves) to this JSON file")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_skip_demo)
