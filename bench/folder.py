"""The engine training resnet50 at 224 px from a folder of JPEG files
(streamed through DataLoader workers, decoded every epoch) against the
in-memory ceiling (the same model on one fixed batch already on the device).
Target on the GPU machine's 16 cores: >= 0.80.

    python bench/folder.py --device cuda               # 3,000 JPEGs of 256x256
    python bench/folder.py --device cpu --quick        # small_cnn, 200 JPEGs: checks that it runs

The JPEGs are generated into the benchmark's own data folder (coloured
shapes on noise, one class per shape and colour).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common  # noqa: F401
from common import alternate, engine_throughput, fresh_home, machine, options, reference_loop, report, verdict

TARGET = 0.80
CLASSES = 10


def _write(args: tuple[Path, int, int]) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    folder, index, label = args
    rng = np.random.default_rng(index)
    im = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in (np.array([(label * 97) % 256, (label * 53) % 256, (label * 151) % 256])))
    x, y, r = rng.integers(60, 196, 2).tolist() + [int(rng.integers(30, 60))]
    (draw.ellipse if label % 2 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
    im.save(folder / f"c{label}" / f"{index:05d}.jpg", quality=90)


def make_jpegs(root: Path, n: int) -> Path:
    for c in range(CLASSES):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write, [(root, i, i % CLASSES) for i in range(n)], chunksize=64))
    return root


def main() -> None:
    args = options(__doc__.splitlines()[0], default_device="cuda").parse_args()
    from core.train import data
    from core.train.config import RunConfig

    home = fresh_home()
    if args.device == "cuda":
        n, backbone, size, batch = (1000 if args.quick else 3000), "resnet50", 224, 256
        warm, measured = (10, 10) if args.quick else (20, 40)
    else:
        n, backbone, size, batch = (200 if args.quick else 1000), "small_cnn", 64, 32
        warm, measured = (2, 8) if args.quick else (5, 40)
    root = make_jpegs(home / "datasets" / "jpegs", n)
    os.environ["TLAB_IN_MEMORY_MB"] = "1"  # stream, however few the files
    folder = RunConfig(backbone=backbone, strategy="scratch", dataset=f"folder:{root}", image_size=size,
                       batch_size=batch, device=args.device)
    # The ceiling: the same model and batch on one fixed, ready batch (10 classes, like the folder).
    ceiling_cfg = folder.replace(dataset="digits")
    assert isinstance(data.load(folder.dataset, size).train.x, data.ImageFiles)
    ceil, eng = alternate(lambda: reference_loop(ceiling_cfg, warm, measured, fixed_batch=True),
                          lambda: engine_throughput(folder, warm, measured), args.repeats or 1)
    ratio = eng / ceil
    lines = [f"machine: {machine(args.device)}; {data.stream_workers()} DataLoader workers",
             f"{backbone} at {size}px, batch {batch}, {n} JPEGs of 256x256 decoded and resized every step",
             f"from the folder: {eng:,.1f} images/s; in-memory ceiling: {ceil:,.1f} images/s; ratio {ratio:.3f} "
             f"(target >= {TARGET}: {verdict(ratio, TARGET)})"]
    report(args, f"folder: streaming JPEGs vs the in-memory ceiling ({args.device})", lines)


if __name__ == "__main__":
    main()
