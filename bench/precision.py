"""Digits accuracy in every precision and memory layout against fp32 in the
default layout, the same run otherwise; the noise is fp32's spread over seeds.
Target: every combination within that noise.

    python bench/precision.py [--device cuda] [--quick]

small_cnn from scratch (no weights needed), digits at 16 px, 3 epochs: on a
CPU without bf16 instructions bf16 and fp16 are slow (correct, not fast), so
the run is small. Absolute times are printed for orientation only.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import fresh_home, machine, options, report


def main() -> None:
    p = options(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="fp32 seeds that measure the noise")
    args = p.parse_args()

    from core.train import engine
    from core.train.config import RunConfig

    fresh_home()
    base = RunConfig(backbone="small_cnn", strategy="scratch", dataset="digits", epochs=1 if args.quick else 3,
                     image_size=16, batch_size=32, device=args.device,
                     labels_per_class=20 if args.quick else None)

    def accuracy(**kw) -> tuple[float, float]:
        t0 = time.perf_counter()
        result = engine.train(base.replace(**kw), run_dir=Path(tempfile.mkdtemp()))
        assert result.status == "finished", result.reason
        return result.test_accuracy, time.perf_counter() - t0

    ref = [accuracy(precision="fp32", channels_last=False, seed=s) for s in range(max(1, args.seeds))]
    accs = [a for a, _ in ref]
    noise = statistics.pstdev(accs) if len(accs) > 1 else 0.0
    band = max(2 * noise, 0.01)  # two standard deviations over seeds, at least one point of accuracy
    lines = [f"machine: {machine(args.device)}",
             f"small_cnn scratch, digits, {base.epochs} epoch(s) at {base.image_size}px, batch {base.batch_size}, "
             f"{args.device}",
             f"fp32, default layout, seeds 0-{len(accs) - 1}: test accuracy {', '.join(f'{a:.4f}' for a in accs)} "
             f"(sd {noise:.4f}; within noise: |delta| <= {band:.4f}); {ref[0][1]:.1f} s at seed 0"]
    for precision in ("fp32", "bf16", "fp16"):
        for channels_last in (False, True):
            if precision == "fp32" and not channels_last:
                continue
            acc, seconds = accuracy(precision=precision, channels_last=channels_last, seed=0)
            delta = acc - accs[0]
            lines.append(f"{precision}{' channels_last' if channels_last else ''}: test accuracy {acc:.4f}, "
                         f"delta vs fp32 {delta:+.4f} ({'within noise' if abs(delta) <= band else 'OUTSIDE the noise'}); "
                         f"{seconds:.1f} s")
    report(args, f"precision: digits accuracy per precision and layout vs fp32 ({args.device})", lines)


if __name__ == "__main__":
    main()
