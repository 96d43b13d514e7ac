"""What writing metrics to the run store costs, as a fraction of training.

Trains real runs on CPU with the StoreListener attached, timing every call
into the listener, and prints the listener's time per step and per epoch as a
ratio of the training step time measured in the same run.

    python bench/store_overhead.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(cfg_kwargs: dict) -> dict:
    from core.runs.store import Store, StoreListener
    from core.train import engine, events
    from core.train.config import RunConfig

    store = Store()
    cfg = RunConfig(**cfg_kwargs)
    run_id = store.add_run(cfg.to_json(), status="running")
    listener = StoreListener(store, run_id)
    spent = {"step": 0.0, "epoch": 0.0, "other": 0.0}
    counts = {"step": 0, "epoch": 0}
    step_times = []

    def timed(event):
        t = time.perf_counter()
        listener(event)
        dt = time.perf_counter() - t
        if isinstance(event, events.Step):
            spent["step"] += dt
            counts["step"] += 1
            step_times.append(event)
        elif isinstance(event, (events.EpochEnd, events.LayerStats)):
            spent["epoch"] += dt
            counts["epoch"] += isinstance(event, events.EpochEnd)
        else:
            spent["other"] += dt

    t0 = time.perf_counter()
    result = engine.Trainer(cfg, Path(tempfile.mkdtemp()), run_id, (timed,)).run()
    wall = time.perf_counter() - t0
    batch = min(cfg.batch_size, 10**9)
    step_seconds = sum(batch / s.images_per_second for s in step_times) / len(step_times)
    epoch_seconds = step_seconds * counts["step"] / counts["epoch"]
    return {
        "config": f"{cfg.backbone}/{cfg.strategy} {cfg.image_size}px batch {cfg.batch_size}",
        "steps": counts["step"],
        "step_ms": 1000 * step_seconds,
        "listener_per_step_ms": 1000 * spent["step"] / counts["step"],
        "listener_per_epoch_ms": 1000 * spent["epoch"] / counts["epoch"],
        "per_step_ratio": spent["step"] / counts["step"] / step_seconds,
        "per_epoch_ratio": spent["epoch"] / counts["epoch"] / epoch_seconds,
        "total_ratio": sum(spent.values()) / wall,
        "status": result.status,
    }


def main() -> None:
    os.environ["TLAB_HOME"] = tempfile.mkdtemp(prefix="tlab-bench-")
    cases = [
        dict(backbone="efficientnet_lite0", strategy="full", dataset="digits", epochs=1, image_size=64, device="cpu"),
        dict(backbone="small_cnn", strategy="scratch", dataset="digits", epochs=2, image_size=16, device="cpu"),
    ]
    print(f"{'config':45s} {'step ms':>8s} {'store/step ms':>14s} {'ratio':>7s} {'store/epoch ms':>15s} {'ratio':>7s}")
    for kw in cases:
        r = measure(kw)
        print(f"{r['config']:45s} {r['step_ms']:8.2f} {r['listener_per_step_ms']:14.4f} {r['per_step_ratio']:7.2%} "
              f"{r['listener_per_epoch_ms']:15.2f} {r['per_epoch_ratio']:7.2%}")
        ok = r["per_step_ratio"] < 0.02
        print(f"  {r['config']}: store time per step {r['per_step_ratio']:.2%} of a step "
              f"(target < 2%: {'meets the target' if ok else 'MISSES the target'})")


if __name__ == "__main__":
    main()
