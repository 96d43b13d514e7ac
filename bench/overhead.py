"""The engine's training throughput against a minimal hand-written PyTorch
loop with the same model, optimizer, batch, data (uint8 on the device),
precision and device. Target: engine / hand loop >= 0.97.

    python bench/overhead.py                 # CPU: small_cnn and efficientnet_lite0 at 64 px
    python bench/overhead.py --device cuda   # GPU: resnet18 and resnet50 at 224 px, batch 256

Weights are random (strategy 'scratch'): throughput does not depend on them,
and the GPU box has no ImageNet weights.
"""

from __future__ import annotations

import common  # noqa: F401  (puts the repository on sys.path)
from common import alternate, engine_throughput, fresh_home, machine, options, reference_loop, report, verdict

TARGET = 0.97


def cases(device: str, quick: bool) -> list[tuple[dict, int, int]]:
    """(config, warm-up steps, measured steps). On CUDA the engine logs every
    10th step, so step counts there are multiples of 10."""
    if device == "cuda":
        return [(dict(backbone=b, image_size=224, batch_size=256), 10 if quick else 20, 10 if quick else 50)
                for b in ("resnet18", "resnet50")]
    return [(dict(backbone="small_cnn", image_size=64, batch_size=32), 3, 10 if quick else 60),
            (dict(backbone="efficientnet_lite0", image_size=64, batch_size=32), 2, 4 if quick else 20)]


def main() -> None:
    args = options(__doc__.splitlines()[0]).parse_args()
    from core.train.config import RunConfig

    fresh_home()
    repeats = args.repeats or (1 if args.quick else (2 if args.device == "cuda" else 3))
    lines = [f"machine: {machine(args.device)}; {repeats} alternating repeat(s), medians"]
    for kw, warm, measured in cases(args.device, args.quick):
        cfg = RunConfig(strategy="scratch", dataset="digits", device=args.device, **kw)
        ref, eng = alternate(lambda: reference_loop(cfg, warm, measured), lambda: engine_throughput(cfg, warm, measured), repeats)
        ratio = eng / ref
        lines.append(f"{cfg.backbone} {cfg.image_size}px batch {cfg.batch_size} on {args.device}: engine {eng:,.1f} images/s, "
                     f"hand loop {ref:,.1f} images/s, ratio {ratio:.3f} (target >= {TARGET}: {verdict(ratio, TARGET)})")
    report(args, f"overhead: engine vs a hand-written loop ({args.device})", lines)


if __name__ == "__main__":
    main()
