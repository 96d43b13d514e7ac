"""What writing TensorBoard event files costs, as a fraction of training.

Trains a real run on CPU with the TensorBoard listener attached (as every run
has it), times every call into it, and prints its time per step as a ratio of
the training step time measured in the same run; also per epoch, and the end
of the run (hparams and the test split's confusion matrix image).

    python bench/tensorboard_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.01  # under 1% of a CPU training step


def measure(cfg_kwargs: dict) -> dict:
    from core import paths
    from core.runs import tensorboard
    from core.train import engine, events
    from core.train.config import RunConfig

    cfg = RunConfig(**cfg_kwargs)
    run_id = events.new_run_id()
    run_dir = paths.run_dir(run_id)
    listener = tensorboard.TensorBoardListener(run_id)
    spent = {"step": 0.0, "epoch": 0.0, "end": 0.0, "other": 0.0}
    counts = {"step": 0, "epoch": 0}
    steps, per_step = [], []

    def timed(event):
        t = time.perf_counter()
        listener(event)
        dt = time.perf_counter() - t
        if isinstance(event, events.Step):
            per_step.append(dt)
            spent["step"] += dt
            counts["step"] += 1
            steps.append(event)
        elif isinstance(event, (events.EpochEnd, events.LayerStats)):
            spent["epoch"] += dt
            counts["epoch"] += isinstance(event, events.EpochEnd)
        elif isinstance(event, events.RunEnd):
            spent["end"] += dt
        else:
            spent["other"] += dt

    t0 = time.perf_counter()
    result = engine.Trainer(cfg, run_dir, run_id, (timed,)).run()
    wall = time.perf_counter() - t0
    assert not listener.failed, "the listener stopped writing"
    step_seconds = sum(cfg.batch_size / s.images_per_second for s in steps) / len(steps)
    return {
        "config": f"{cfg.backbone}/{cfg.strategy} {cfg.image_size}px batch {cfg.batch_size}",
        "steps": counts["step"], "step_ms": 1000 * step_seconds,
        "tb_per_step_ms": 1000 * spent["step"] / counts["step"],
        "tb_step_median_ms": 1000 * sorted(per_step)[len(per_step) // 2],
        "per_step_ratio": spent["step"] / counts["step"] / step_seconds,
        "tb_per_epoch_ms": 1000 * spent["epoch"] / counts["epoch"],
        "end_ms": 1000 * spent["end"], "start_ms": 1000 * spent["other"],
        "total_ratio": sum(spent.values()) / wall, "status": result.status,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one small run only")
    args = p.parse_args()
    os.environ["TLAB_HOME"] = tempfile.mkdtemp(prefix="tlab-bench-")
    cases = [dict(backbone="small_cnn", strategy="scratch", dataset="digits", epochs=2, image_size=16, device="cpu")]
    if not args.quick:
        cases.append(dict(backbone="efficientnet_lite0", strategy="full", dataset="digits", epochs=1, image_size=64,
                          device="cpu"))
    print(f"{'config':45s} {'steps':>6s} {'step ms':>8s} {'tb/step ms':>11s} {'ratio':>7s} {'median ms':>10s} {'tb/epoch ms':>12s} "
          f"{'start ms':>9s} {'end ms':>8s} {'share of wall':>13s}")
    worst = 0.0
    for kw in cases:
        r = measure(kw)
        worst = max(worst, r["per_step_ratio"])
        print(f"{r['config']:45s} {r['steps']:6d} {r['step_ms']:8.2f} {r['tb_per_step_ms']:11.4f} {r['per_step_ratio']:7.2%} {r['tb_step_median_ms']:10.4f} "
              f"{r['tb_per_epoch_ms']:12.2f} {r['start_ms']:9.1f} {r['end_ms']:8.1f} {r['total_ratio']:13.2%}")
    print(f"TensorBoard per step: {worst:.2%} of a CPU training step at worst (target < {TARGET:.0%}): "
          f"{'OK' if worst < TARGET else 'OVER'}")


if __name__ == "__main__":
    main()
