"""Feature extraction (frozen backbone, head trained) for 10 epochs with the
feature cache against without it, the same run otherwise. Target on CPU for
efficientnet_lite0 on digits at 64 px: >= 7x faster with the cache computed
in the run, >= 25x with it read back from the data folder.

    python bench/feature_cache.py [--device cuda] [--quick]

Three runs: without the cache (the backbone runs on every batch of every
epoch), with it on an empty data folder (features computed once and written),
and the same run again (features read back from the data folder's cache).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import fresh_home, machine, options, report, verdict, weights_for

TARGET = 7.0
TARGET_WARM = 25.0


def timed_run(cfg) -> tuple[float, float]:
    from core.train import data, engine

    data._raw_cached.cache_clear()  # each run reads the data folder as a new process would
    t0 = time.perf_counter()
    result = engine.train(cfg, run_dir=Path(tempfile.mkdtemp()))
    assert result.status == "finished", result.reason
    return time.perf_counter() - t0, result.test_accuracy


def main() -> None:
    args = options(__doc__.splitlines()[0]).parse_args()
    from core.train import data, engine
    from core.train.config import RunConfig

    home = fresh_home()
    cfg = RunConfig(backbone="efficientnet_lite0", strategy="feature_extraction", dataset="digits",
                    epochs=2 if args.quick else 10, image_size=32 if args.quick else 64, device=args.device)
    # No ImageNet weights on the GPU box: a random backbone there, frozen all the same, costs the same.
    cfg = cfg.replace(weights=weights_for(cfg.backbone, cfg.image_size, home))
    pretrained = cfg.weights is None
    data.load_raw(cfg.dataset, cfg.image_size)  # decoded once up front: every run below reads the same cache

    engine.FEATURE_CACHE = False
    without, acc_without = timed_run(cfg)
    engine.FEATURE_CACHE = True
    first, acc_first = timed_run(cfg)
    second, acc_second = timed_run(cfg)
    ratio = without / first
    lines = [
        f"machine: {machine(args.device)}",
        f"efficientnet_lite0 {'ImageNet' if pretrained else 'random (no ImageNet weights here)'} weights, digits, "
        f"{cfg.epochs} epochs at {cfg.image_size}px on {args.device}",
        f"without the cache: {without:.1f} s (test accuracy {acc_without:.3f})",
        f"with the cache, computed in this run: {first:.1f} s (test accuracy {acc_first:.3f})",
        f"with the cache, read from the data folder: {second:.1f} s (test accuracy {acc_second:.3f})",
        f"speed-up with the cache computed in the run (cold): {ratio:.1f}x (target >= {TARGET:g}x: {verdict(ratio, TARGET)})",
        f"speed-up with the cache read back (warm): {without / second:.1f}x "
        f"(target >= {TARGET_WARM:g}x: {verdict(without / second, TARGET_WARM)})",
    ]
    report(args, f"feature_cache: feature extraction with vs without the cache ({args.device})", lines)


if __name__ == "__main__":
    main()
