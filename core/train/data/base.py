"""What a dataset is once loaded (`DatasetSpec`, `RawData`, `Split`,
`DataBundle`) and how one image becomes a uint8 tensor: decode, EXIF-rotate,
centre-crop and resize; a batch resized at once."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core import limits

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"}
# Below this size an entry's compression ratio says nothing (a blank icon compresses 1000x).
RATIO_FLOOR_BYTES = 1 << 20
FOLDER_PREFIX = "folder:"  # a dataset name that is a folder or ZIP of class folders: folder:PATH


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    source: str  # "bundled" | "torchvision" | "folder"
    description: str
    loader: Callable[[int], "RawData"] = field(repr=False, default=None)  # image size -> RawData


@dataclass
class RawData:
    """Decoded images at the target size; `test_start` marks where an
    official test split begins (None: we split it ourselves)."""

    x: torch.Tensor  # uint8 (N, C, S, S), C in {1, 3}
    y: torch.Tensor  # int64 (N,)
    class_names: list[str]
    test_start: int | None = None
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    key: str = ""  # identity of the decoded images (dataset, files, size): part of derived caches' keys
    split: torch.Tensor | None = None  # int64 (N,): 0 train, 1 val, 2 test, for a train/ val/ test/ folder layout


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None  # positions in the RawData: with its key, names these images

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    name: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    key: str = ""  # RawData.key

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.train.y, minlength=self.num_classes).tolist()
        return dict(zip(self.class_names, counts))


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, antialiased."""
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def decode_image(data: bytes | Path, size: int) -> np.ndarray:
    """Decode one image to RGB, apply EXIF rotation, resize the short side to
    `size` and centre-crop: (3, size, size) uint8. Raises on unreadable input."""
    from PIL import Image, ImageOps

    limit = limits.max_image_pixels()
    # PIL's own guard warns at its limit and refuses at twice it; the check below
    # refuses at the limit itself, with the image's size and the setting to change.
    Image.MAX_IMAGE_PIXELS = None
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(src) as im:
        if im.width * im.height > limit:  # only the header is read so far: no memory spent
            raise Image.DecompressionBombError(
                f"{im.width}x{im.height} pixels, over {limits.MAX_IMAGE_PIXELS.describe()}")
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        if im.mode.startswith("I;16") or im.mode == "I":
            arr = np.asarray(im, dtype=np.float64)
            hi = arr.max() or 1.0
            im = Image.fromarray((arr * (255.0 / hi)).astype(np.uint8))
        im = im.convert("RGB")
        # The centred square, resized in one step: a 1 x 100,000 strip never
        # becomes a 64 x 6,400,000 intermediate.
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        im = im.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=3.0)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def _decode_all(items: list[tuple[str, Callable[[], bytes | Path], int]], size: int) -> tuple[torch.Tensor, torch.Tensor, int, list[str]]:
    """Decode (name, reader, label) items; unreadable ones are skipped and counted."""
    xs, ys, bad = [], [], []
    for name, read, label in items:
        try:
            xs.append(decode_image(read(), size))
            ys.append(label)
        except Exception as e:  # PIL raises many types for broken files
            bad.append(f"{name} ({type(e).__name__})")
    if bad:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(bad), bad[0])
    x = torch.from_numpy(np.stack(xs)) if xs else torch.empty((0, 3, size, size), dtype=torch.uint8)
    return x, torch.tensor(ys, dtype=torch.int64), len(bad), bad[:10]
