"""Transfer run and its scratch twin: side by side on one device, or one
after the other? Prints the wall time of both ways and their ratio.

    python bench/side_by_side.py [--epochs 3] [--image-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def wall(side_by_side: bool, epochs: int, image_size: int) -> float:
    from core.runs import jobs
    from core.train.config import RunConfig

    os.environ["TLAB_HOME"] = tempfile.mkdtemp(prefix="tlab-bench-")
    base = RunConfig(backbone="efficientnet_lite0", dataset="digits", epochs=epochs, image_size=image_size, device="cpu")
    t0 = time.perf_counter()
    _, ids = jobs.launch_group([base.replace(strategy="full"), base.replace(strategy="scratch")], side_by_side=side_by_side)
    rows = [jobs.wait(i) for i in ids]
    assert all(r["status"] == "finished" for r in rows), [r["reason"] for r in rows]
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=64)
    a = p.parse_args()
    seq = wall(False, a.epochs, a.image_size)
    par = wall(True, a.epochs, a.image_size)
    print(f"transfer + scratch, EfficientNet-Lite0 on digits, {a.epochs} epochs at {a.image_size}px, {os.cpu_count()} CPUs")
    print(f"one after the other: {seq:6.1f} s")
    print(f"side by side:        {par:6.1f} s")
    print(f"ratio side-by-side / sequential: {par / seq:.3f} "
          f"(target < 1: {'meets the target' if par < seq else 'MISSES the target'})")


if __name__ == "__main__":
    main()
