"""`python -m core advise`: measure a dataset through the pretrained backbones
and recommend a strategy (core.lessons.advisor)."""

from __future__ import annotations

import json
import sys

from core.cli.options import labels
from core.cli.output import fmt, print_table
from core.errors import ConfigError


def _names(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--backbones needs names separated by commas, e.g. efficientnet_lite0,resnet18.")
    return names


def cmd_advise(args) -> int:
    from core.lessons import advisor

    advice = advisor.advise(args.dataset, args.labels_per_class, _names(args.backbones), args.image_size, args.seed)
    out = advice.to_dict()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    shift = "n/a" if advice.domain_shift is None else f"{advice.domain_shift:.3f} (through {advice.shift_backbone})"
    print(f"{advice.dataset}: {advice.labels_per_class} labelled images per class, domain shift {shift}")
    print(f"quadrant: {advice.quadrant}  ->  strategy: {advice.strategy}")
    print(f"why: {advice.reason}")
    print(f"race it: python -m core race --dataset {advice.dataset} --backbone {advice.backbone} "
          f"--strategies {','.join(advice.race)}"
          + (f" --labels-per-class {args.labels_per_class}" if args.labels_per_class else ""))
    print()
    print_table(fmt(out["backbones"]), ["name", "knn_accuracy", "logme", "domain_shift", "feature_dim", "seconds", "note"])
    print(f"\nmeasured in {advice.seconds:.1f}s on {advice.images_per_class_probed} images per class", file=sys.stderr)
    return 0


def register(sub) -> None:

    sp = sub.add_parser("advise", help="measure a dataset through pretrained backbones; recommend a strategy")
    sp.add_argument("--dataset", default="digits", help="dataset name or folder:PATH")
    sp.add_argument("--labels-per-class", type=labels, default=None,
                    help="reduce the training set to K images per class first, as a run would")
    sp.add_argument("--backbones", default=None,
                    help="comma-separated backbones to rank (default: every pretrained one available offline)")
    sp.add_argument("--image-size", type=int, default=64)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_advise)
