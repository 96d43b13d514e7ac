"""What a dataset is once loaded (`DatasetSpec`, `RawData`, `Split`,
`DataBundle`), many image files decoded at once (`core.train.decode` holds
the decoding itself), and a batch resized at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from core.train.decode import decode_image, decode_many  # noqa: F401  (decode_image: re-exported)

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


def _decode_all(items: list[tuple[str, Callable[[], bytes | Path], int]], size: int) -> tuple[torch.Tensor, torch.Tensor, int, list[str]]:
    """Decode (name, reader, label) items on every core; unreadable ones are
    skipped, counted and named once."""
    x, kept, bad = decode_many([(name, read) for name, read, _ in items], size)
    if bad:
        log.warning("skipped %d unreadable image(s): %s%s", len(bad), ", ".join(bad[:10]),
                    f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    y = torch.tensor([items[i][2] for i in kept], dtype=torch.int64)
    return torch.from_numpy(x), y, len(bad), bad[:10]
