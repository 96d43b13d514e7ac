"""A person's folder of photos: its first decode and its preview (CPU rows),
and training from it streamed (GPU row).

decode: 20,000 JPEGs of 1024x768 (10 class folders, 3 broken files) decoded to
64 px on every core (core.train.decode: one process per core, Pillow's draft
mode) against plain `Image.open().convert().resize()` on one core, measured
in the same run on a sample of the files (half before, half after). Target
>= 4x on 2 cores.
preview: the Experiment page's preview of that folder (counts by listing, 8
samples per class decoded). Target < 3 s.
stream: the engine training resnet50 at 224 px from a folder of JPEG files
(streamed through DataLoader workers, decoded every epoch) against the
in-memory ceiling (the same model on one fixed batch already on the device).
Target on the GPU machine's 16 cores: >= 0.80.

    python bench/folder.py                             # decode + preview, 20,000 photos (made once, kept in /tmp)
    python bench/folder.py --quick                     # 2,000 photos
    python bench/folder.py --device cuda               # + stream: 3,000 JPEGs of 256x256
    python bench/folder.py --device cpu --quick --rows stream   # small_cnn, 200 JPEGs: checks that it runs

The photos are generated (tests/helpers.py `photos_folder`: smooth colours,
texture and a shape per class; 500 distinct pictures, the other files copies
of them, each decoded on its own).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common  # noqa: F401
from common import alternate, engine_throughput, fresh_home, machine, options, reference_loop, report, verdict

TARGET = 0.80
CLASSES = 10
DECODE_TARGET, PREVIEW_TARGET_S = 4.0, 3.0


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


def photos(n: int) -> Path:
    """n photos of 1024x768 in 10 class folders, made once and kept for later runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import photos_folder

    root = Path(tempfile.gettempdir()) / f"tlab-bench-photos-{n}"
    if not (root / "complete").exists():
        t0 = time.perf_counter()
        photos_folder(root / "photos", n, large_every=1, distinct=500, processes=os.cpu_count() or 1)
        (root / "complete").write_text("")
        print(f"  (made {n:,} photos in {time.perf_counter() - t0:.0f} s under {root})")
    return root / "photos"


def decode_and_preview(args) -> None:
    from PIL import Image

    from core.service import forms
    from core.train import data, decode

    n = 2000 if args.quick else 20000
    root = photos(n)
    os.environ["TLAB_FOLDER_ROOTS"] = str(root.parent)
    t0 = time.perf_counter()
    view = forms.preview_folder(f"folder:{root}")
    preview_s = time.perf_counter() - t0
    items = [(name, read) for files in data.list_folder(root).classes.values() for name, read in files]
    sample = items[:: max(1, len(items) // (200 if args.quick else 600))]

    def plain(part) -> float:  # the reference: one core, whole-image decode, then resize
        t = time.perf_counter()
        for _, read in part:
            try:
                Image.open(read()).convert("RGB").resize((64, 64))
            except OSError:
                pass
        return time.perf_counter() - t

    half = len(sample) // 2
    ref_s = plain(sample[:half])
    t = time.perf_counter()
    x, kept, bad = decode.decode_many(items, 64)
    par_s = time.perf_counter() - t
    ref_s += plain(sample[half:])
    ref_rate, par_rate = len(sample) / ref_s, len(items) / par_s
    ratio = par_rate / ref_rate
    load = os.getloadavg()[0]
    lines = [f"machine: {machine('cpu')}; load average {load:.1f} at the end",
             f"decode: {len(items):,} files (1024x768 JPEGs, {len(bad)} broken) to 64 px on {decode.cores()} processes: "
             f"{par_s:.1f} s, {par_rate:,.0f} images/s; plain Image.open().convert().resize() on one core "
             f"({len(sample)} of the files): {ref_rate:,.0f} images/s; ratio {ratio:.1f}x "
             f"(target >= {DECODE_TARGET:g}x: {verdict(ratio, DECODE_TARGET)})",
             f"preview: {view.images:,} files in {len(view.class_names)} classes, {sum(map(len, view.samples))} samples "
             f"decoded: {preview_s:.2f} s (target < {PREVIEW_TARGET_S:g} s: "
             f"{verdict(preview_s, PREVIEW_TARGET_S, higher_is_better=False)})"]
    report(args, f"folder: first decode and preview of {n:,} photos (cpu)", lines)


def main() -> None:
    parser = options(__doc__.splitlines()[0], default_device="cpu")
    parser.add_argument("--rows", default=None, help="decode,preview (CPU) and/or stream; default: decode,preview "
                                                     "on cpu, all three on cuda")
    args = parser.parse_args()
    rows = set((args.rows or ("decode,preview,stream" if args.device == "cuda" else "decode,preview")).split(","))
    fresh_home()
    if rows & {"decode", "preview"}:
        decode_and_preview(args)
    if "stream" in rows:
        stream(args)


def stream(args) -> None:
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
