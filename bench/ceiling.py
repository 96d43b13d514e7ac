"""The engine fine-tuning resnet18 at 224 px on an in-memory dataset against
the same model training on one fixed batch already on the device (the
compute ceiling: no data work at all), both eager and both with the
torch.compile switch on. Target on a GPU: engine / ceiling >= 0.85.

    python bench/ceiling.py --device cuda
    python bench/ceiling.py --device cpu --quick   # small_cnn at 32 px: checks that it runs
"""

from __future__ import annotations

import common  # noqa: F401
from common import alternate, engine_throughput, fresh_home, machine, options, reference_loop, report, verdict

TARGET = 0.85


def main() -> None:
    p = options(__doc__.splitlines()[0], default_device="cuda")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    args = p.parse_args()
    from core.train.config import RunConfig

    fresh_home()
    if args.device == "cuda":
        cfg = RunConfig(backbone="resnet18", strategy="scratch", dataset="digits", image_size=224, batch_size=256,
                        device="cuda")
        warm, measured = (10, 20) if args.quick else (20, 100)
        warm_compiled = 30  # compilation happens in the first steps
    else:
        cfg = RunConfig(backbone="small_cnn", strategy="scratch", dataset="digits", image_size=32, batch_size=32, device="cpu")
        warm, measured = (3, 10) if args.quick else (5, 40)
        warm_compiled = 5
    repeats = args.repeats or 1
    lines = [f"machine: {machine(args.device)}",
             f"{cfg.backbone} {cfg.image_size}px batch {cfg.batch_size}, random init, all layers trained, "
             f"{'bf16 autocast, channels_last' if args.device == 'cuda' else 'fp32'}; {measured} measured steps"]
    ceil, eng = alternate(lambda: reference_loop(cfg, warm, measured, fixed_batch=True),
                          lambda: engine_throughput(cfg, warm, measured), repeats)
    lines.append(f"eager: engine {eng:,.1f} images/s, ceiling {ceil:,.1f} images/s, ratio {eng / ceil:.3f} "
                 f"(target >= {TARGET}: {verdict(eng / ceil, TARGET)})")
    if not args.no_compile:
        ceil_c, eng_c = alternate(lambda: reference_loop(cfg, warm_compiled, measured, fixed_batch=True, compile=True),
                                  lambda: engine_throughput(cfg.replace(compile=True), warm_compiled, measured), repeats)
        lines.append(f"compiled: engine {eng_c:,.1f} images/s, ceiling {ceil_c:,.1f} images/s, ratio {eng_c / ceil_c:.3f} "
                     f"(target >= {TARGET}: {verdict(eng_c / ceil_c, TARGET)})")
        lines.append(f"what torch.compile gains: engine {eng_c / eng:.2f}x, ceiling {ceil_c / ceil:.2f}x "
                     "(published figures for AMP training: about 1.5x on average)")
    report(args, f"ceiling: engine vs one fixed batch on the device ({args.device})", lines)


if __name__ == "__main__":
    main()
