"""The dashboard's default demo (EfficientNet-Lite0 fine-tuned on digits at
64 px for 3 epochs, and its scratch twin beside it) from launch to both
finished, through the real job queue and worker processes. Target on the
2-core CPU: under 90 s. Prints the breakdown of where the time went.

    python bench/demo.py [--quick] [--twice]   # --quick: 1 epoch at 32 px

--twice launches it again in the same data folder: the first launch decodes
the images, the second reads them from the data folder's cache.
"""

from __future__ import annotations

import json
import time

import common  # noqa: F401
from common import fresh_home, machine, options, report, verdict

TARGET = 90.0


def breakdown(store, run_id: str, launched: float) -> dict:
    """Seconds per phase of one run, from the store's own timestamps."""
    row = store.run(run_id)
    events = store.events(run_id)
    started_event = events[events["message"].str.contains("started epoch")]["t"]
    epochs = store.metrics([run_id])
    t_start = float(started_event.iloc[0]) if len(started_event) else row["started"]
    training = float(epochs["seconds"].sum())
    last_epoch = float(epochs["t"].max())
    return {
        "queue and worker start-up": row["started"] - launched,
        "data and model set-up": t_start - row["started"],
        "training": training,
        "evaluation and checkpoints (per epoch)": last_epoch - t_start - training,
        "test evaluation and finishing": row["ended"] - last_epoch,
        "total": row["ended"] - launched,
    }


def launch_demo(epochs: int, image_size: int) -> tuple[float, list[dict]]:
    from core.runs import jobs
    from core.runs.store import Store
    from core.train import strategies
    from core.train.config import RunConfig

    cfg = RunConfig(epochs=epochs, image_size=image_size, device="cpu")  # the Experiment page's defaults
    cfg = cfg.replace(lr=strategies.get(cfg.strategy).default_lr, name="transfer")
    twin = cfg.replace(strategy="scratch", weights=None, lr=None, name="scratch twin")
    store = Store()
    t0 = time.time()
    _, ids = jobs.launch_group([cfg, twin], side_by_side=True, store=store)
    rows = [jobs.wait(i, store) for i in ids]
    wall = time.time() - t0
    assert all(r["status"] == "finished" for r in rows), [r["reason"] for r in rows]
    return wall, [breakdown(store, i, t0) | {"test accuracy": json.loads(r["result"])["test_accuracy"]
                                             if isinstance(r["result"], str) else r["result"]["test_accuracy"]}
                  for i, r in zip(ids, rows)]


def main() -> None:
    p = options(__doc__.splitlines()[0])
    p.add_argument("--twice", action="store_true", help="launch again in the same data folder (decoded images cached)")
    args = p.parse_args()
    fresh_home()
    epochs, size = (1, 32) if args.quick else (3, 64)
    lines = [f"machine: {machine('cpu')}", f"Lite0 full fine-tuning + scratch twin, digits, {epochs} epoch(s) at {size}px, "
                                          "side by side, through the job queue"]
    labels = ["first launch (images decoded)", "second launch (images from the data folder's cache)"]
    for label in labels[: 2 if args.twice else 1]:
        wall, parts = launch_demo(epochs, size)
        lines.append(f"{label}: both finished in {wall:.1f} s, {wall / TARGET:.2f} of the {TARGET:g} s target "
                     f"({verdict(wall, TARGET, higher_is_better=False)})")
        for name, part in zip(("transfer", "scratch twin"), parts):
            lines.append(f"  {name}: " + ", ".join(f"{k} {v:.1f} s" if k != "test accuracy" else f"{k} {v:.3f}"
                                                   for k, v in part.items()))
    report(args, "demo: the default dashboard demo, launch to both finished (cpu)", lines)


if __name__ == "__main__":
    main()
