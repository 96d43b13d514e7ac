"""The dashboard's default demo (EfficientNet-Lite0 fine-tuned on digits at
64 px for 3 epochs, and its scratch twin beside it) from launch to both
finished, through the real job queue and worker processes. Target on the
2-core CPU (idle): under 45 s. Prints the breakdown of where the time went and
the load average beside each figure (on a shared machine the wall time also
counts the wait for a core).

    python bench/demo.py [--quick] [--twice] [--channels-last]   # --quick: 1 epoch at 32 px

--twice launches it again in the same data folder: the first launch decodes
the images, the second reads them from the data folder's cache.
--channels-last launches the pair in the channels_last layout as well, after
the default one's two launches, in the same run (a ratio of the two with the
images cached, on the same machine).
"""

from __future__ import annotations

import json
import os
import time

import common  # noqa: F401
from common import fresh_home, machine, options, report, verdict

TARGET = 45.0


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


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def launch_demo(epochs: int, image_size: int, channels_last: bool | None = None) -> tuple[float, list[dict]]:
    from core.runs import jobs
    from core.runs.store import Store
    from core.train import strategies
    from core.train.config import RunConfig

    cfg = RunConfig(epochs=epochs, image_size=image_size, device="cpu")  # the Experiment page's defaults
    if channels_last is not None:
        cfg = cfg.replace(channels_last=channels_last)
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
    p.add_argument("--channels-last", action="store_true", help="launch the pair in channels_last too, after the default")
    args = p.parse_args()
    fresh_home()
    epochs, size = (1, 32) if args.quick else (3, 64)
    lines = [f"machine: {machine('cpu')}", f"Lite0 full fine-tuning + scratch twin, digits, {epochs} epoch(s) at {size}px, "
                                          "side by side, through the job queue"]
    labels = ["first launch (images decoded)", "second launch (images from the data folder's cache)"]
    # channels_last is compared with the default's second launch: both read the cached images
    launches = [(label, None) for label in labels[: 2 if args.twice or args.channels_last else 1]]
    if args.channels_last:
        launches.append(("the same in channels_last (images from the cache)", True))
    walls = []
    for label, layout in launches:
        wall, parts = launch_demo(epochs, size, layout)
        walls.append(wall)
        lines.append(f"{label}: both finished in {wall:.1f} s, {wall / TARGET:.2f} of the {TARGET:g} s target "
                     f"({verdict(wall, TARGET, higher_is_better=False)}); {load()}")
        for name, part in zip(("transfer", "scratch twin"), parts):
            lines.append(f"  {name}: " + ", ".join(f"{k} {v:.1f} s" if k != "test accuracy" else f"{k} {v:.3f}"
                                                   for k, v in part.items()))
    if args.channels_last:
        lines.append(f"channels_last vs the default layout: {walls[-1] / walls[-2]:.2f} of its time")
    report(args, "demo: the default dashboard demo, launch to both finished (cpu)", lines)


if __name__ == "__main__":
    main()
