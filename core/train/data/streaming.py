"""Large folders: images too many to hold decoded (over TLAB_IN_MEMORY_MB)
stream from their files through DataLoader workers (`ImageFiles`), and
`Batches` gives uint8 batches of any split on the training device."""

from __future__ import annotations

import logging
import math
import os
import zipfile
from pathlib import Path

import torch

from core import limits
from core.train.data.base import Split, decode_image
from core.train.data.folders import check_classes, list_folder
from core.train.data.registry import DECODE_VERSION, canonical, folder_path, source_stamp

log = logging.getLogger(__name__)


def _default_in_memory_mb() -> float:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return float(min(8192, max(256, ram // 4 >> 20)))


# Decoded uint8 images (N x 3 x S x S bytes) up to this size are kept in memory
# (and on the training device); a folder above it streams from its files.
IN_MEMORY_MB = limits.Limit("decoded images kept in memory", "TLAB_IN_MEMORY_MB", _default_in_memory_mb(), "MB")


_REPORTED: set[str] = set()  # unreadable files already named in this process's log


class ImageFiles(torch.utils.data.Dataset):
    """The images of a folder or ZIP, decoded one at a time when asked: for
    datasets too large to hold decoded. Items are (uint8 (3, S, S), ok);
    an unreadable file gives ok=False and is dropped from its batch."""

    def __init__(self, source: Path, names: list[str], size: int, key: str, y: torch.Tensor,
                 class_names: list[str], skipped: int = 0, skipped_examples: list[str] | None = None):
        self.source, self.names, self.size, self.key, self.y = source, names, size, key, y
        self.class_names, self.skipped, self.skipped_examples = class_names, skipped, skipped_examples or []
        self.split: torch.Tensor | None = None  # a train/ val/ test/ layout's splits (see RawData.split)
        self._zip: tuple[int, zipfile.ZipFile] | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.names), 3, self.size, self.size)

    def take(self, idx: torch.Tensor) -> "ImageFiles":
        names = [self.names[i] for i in idx.tolist()]
        return ImageFiles(self.source, names, self.size, self.key, self.y[idx], self.class_names)

    def _read(self, name: str) -> bytes | Path:
        if self.source.is_dir():
            return self.source / name
        # One ZipFile per process: DataLoader workers must not share a file offset.
        if self._zip is None or self._zip[0] != os.getpid():
            self._zip = (os.getpid(), zipfile.ZipFile(self.source))
        return self._zip[1].read(name)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            return torch.from_numpy(decode_image(self._read(self.names[i]), self.size)), True
        except Exception as e:  # PIL raises many types for broken files
            if self.names[i] not in _REPORTED:  # once by name, not once per epoch
                _REPORTED.add(self.names[i])
                log.warning("skipped unreadable image %s (%s)", self.names[i], type(e).__name__)
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), False

    def __getstate__(self):  # workers started by spawn open their own ZIP handle
        return {**self.__dict__, "_zip": None}


def _stream_listing(name: str, size: int) -> ImageFiles | None:
    """The folder's files, labelled, when decoding them all would pass the
    in-memory limit; None when they fit (the usual, decoded path)."""
    path = folder_path(name)
    if not path.exists():
        return None  # the decoded path says what is wrong
    listing = list_folder(path)
    classes, skipped, examples = listing.classes, listing.skipped, listing.examples
    n = sum(len(v) for v in classes.values())
    if n * 3 * size * size <= IN_MEMORY_MB.value() * 2**20:
        return None
    names = list(classes)
    check_classes(path, {c: len(files) for c, files in classes.items()})
    files = [read.member for cls in classes.values() for _, read in cls]
    y = torch.tensor([label for label, cls in enumerate(classes.values()) for _ in cls], dtype=torch.int64)
    from core.train import cache

    name = canonical(name)
    key = cache.digest({"dataset": name, "size": size, "stamp": list(source_stamp(name)), "decode": DECODE_VERSION})
    log.info("%s: %d images at %dpx pass %s: streaming them from the files", name, n, size, IN_MEMORY_MB.describe())
    files = ImageFiles(path, files, size, key, y, names, skipped, examples[:10])
    files.split = torch.tensor(listing.split, dtype=torch.int64) if listing.split is not None else None
    return files


def stream_workers() -> int:
    """DataLoader workers: every core but one for the training process, at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(16, cores - 1))


def _collate(items: list[tuple[torch.Tensor, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in items]), torch.tensor([ok for _, ok in items], dtype=torch.bool)


class _Order(torch.utils.data.Sampler):
    """Batches of indices from an order the trainer sets before each epoch, so
    one DataLoader (and its persistent workers) serves every epoch."""

    def __init__(self, batch_size: int):
        self.batch_size, self.order = batch_size, torch.empty(0, dtype=torch.long)

    def __iter__(self):
        for i in range(0, len(self.order), self.batch_size):
            yield self.order[i : i + self.batch_size].tolist()

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)


class Batches:
    """uint8 batches of a split on the training device, with their labels and
    positions: sliced from memory, or decoded by DataLoader workers (pinned
    memory, persistent across epochs, several batches ahead) for ImageFiles."""

    def __init__(self, split: Split, batch_size: int, device: torch.device, workers: int | None = None):
        self.split, self.batch_size, self.device = split, batch_size, torch.device(device)
        self.streamed = isinstance(split.x, ImageFiles)
        self.dropped = 0  # unreadable files met so far
        self._sampler = self._loader = None
        if self.streamed:
            workers = stream_workers() if workers is None else workers
            self._sampler = _Order(batch_size)
            self._loader = torch.utils.data.DataLoader(
                split.x, batch_sampler=self._sampler, num_workers=workers, collate_fn=_collate,
                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None)
            self._y = split.y.to(self.device)

    def __call__(self, order: torch.Tensor | None = None, span: tuple[int, int] | None = None):
        """Yield (x uint8, y, positions) over `order`, or over the positions
        start..stop-1 of `span` in turn (default: the whole split)."""
        n = len(self.split)
        if order is None:
            start, stop = span or (0, n)
            if not self.streamed:  # in turn: slices, no copies
                x, y = self.split.x, self.split.y
                for i in range(start, stop, self.batch_size):
                    xb = x[i : min(stop, i + self.batch_size)]
                    yield xb, y[i : i + len(xb)], torch.arange(i, i + len(xb), device=x.device)
                return
            order = torch.arange(start, min(stop, n))
        if not self.streamed:
            x, y = self.split.x, self.split.y
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                yield x[idx], y[idx], idx
            return
        self._sampler.order = order.cpu()
        for i, (xb, ok) in enumerate(self._loader):
            idx = self._sampler.order[i * self.batch_size : (i + 1) * self.batch_size]
            if not bool(ok.all()):
                self.dropped += int((~ok).sum())
                xb, idx = xb[ok], idx[ok]
                if not len(idx):
                    continue
            idx = idx.to(self.device, non_blocking=True)
            yield xb.to(self.device, non_blocking=True), self._y[idx], idx
