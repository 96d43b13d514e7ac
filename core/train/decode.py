"""Image files to uint8 squares: one file (Pillow; a JPEG decoded at reduced
scale with draft mode when the target size allows), and many at once on every
core with progress.

This module imports Pillow and numpy only (no torch), so a decoding process
started by `spawn` imports little. A process with one thread (the CLI, the
run worker) forks its decoders, which costs nothing; one with several (the
app server) spawns them, as forking under threads can deadlock.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from core import limits

log = logging.getLogger(__name__)

# Below this many files one process decodes them: starting the pool costs more.
PARALLEL_FROM = 256
CHUNK = 128  # files per task sent to a decoding process

# Who hears about a long decode: (done, total) -> None. Set per thread/task by `reporting`.
_REPORTER: ContextVar[Callable[[int, int], None] | None] = ContextVar("decode_reporter", default=None)


def decode_image(data: bytes | Path | str, size: int) -> np.ndarray:
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
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale when its short side stays >= size
        # (libjpeg's DCT scaling: several times faster than decoding it whole and shrinking).
        if im.format == "JPEG" and im.mode in ("RGB", "L", "YCbCr", "CMYK"):
            scale = size / max(1, min(im.width, im.height))
            if scale < 0.5:
                im.draft("RGB", (max(1, int(np.ceil(im.width * scale))), max(1, int(np.ceil(im.height * scale)))))
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


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def reporting(fn: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, decodes of many files (in this thread) tell `fn(done, total)` how far they are."""
    token = _REPORTER.set(fn)
    try:
        yield
    finally:
        _REPORTER.reset(token)


PROGRESS = re.compile(r"decoding images: ([\d,]+) / ([\d,]+)")


def progress_text(done: int, total: int) -> str:
    """How far a decode is, in the one form the CLI prints, runs note and pages read back."""
    return f"decoding images: {done:,} / {total:,} ({100 * done // max(1, total)}%)"


def parse_progress(text: str) -> tuple[int, int] | None:
    """(done, total) from the last `progress_text` in `text`, None if there is none."""
    found = PROGRESS.findall(text or "")
    return (int(found[-1][0].replace(",", "")), int(found[-1][1].replace(",", ""))) if found else None


class Tenths:
    """A reporter that says `progress_text` at the start and at each further tenth of a decode: the default
    one logs it (the worker's log); a run's says it as a note of the run, which Live shows."""

    def __init__(self, say: Callable[[str], None] = log.info, min_total: int = 0):
        self.say, self.shown, self.min_total = say, -1, min_total  # decodes of fewer files pass in silence

    def __call__(self, done: int, total: int) -> None:
        tenth = done * 10 // max(1, total)
        if tenth != self.shown and total >= self.min_total:
            self.shown = tenth
            self.say(progress_text(done, total))


def _decode_chunk(args: tuple[list[bytes | str | tuple[str, str]], int]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """In a decoding process: the readable images of a chunk, stacked, and (position, error) of the others."""
    sources, size = args
    out = np.empty((len(sources), 3, size, size), dtype=np.uint8)
    bad, n = [], 0
    for i, src in enumerate(sources):
        if isinstance(src, tuple):  # ("unread", error): reading it failed in the parent
            bad.append((i, src[1]))
            continue
        try:
            out[n] = decode_image(src, size)
            n += 1
        except Exception as e:  # PIL raises many types for broken files
            bad.append((i, type(e).__name__))
    return out[:n], bad


def decode_many(items: list[tuple[str, Callable[[], bytes | Path]]], size: int,
                processes: int | None = None) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode (name, reader) items on every core: (uint8 (K, 3, size, size) of
    the readable ones in order, their positions in `items`, 'name (error)' of
    each unreadable one). Progress goes to the reporter `reporting` set (else
    a log line per tenth); readers run here, so a ZIP is read by one process."""
    n = len(items)
    report = _REPORTER.get() or Tenths()
    processes = cores() if processes is None else processes
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    bad: list[tuple[int, str]] = []
    done = 0
    report(0, n)
    if n < PARALLEL_FROM or processes < 2:
        last = time.monotonic()
        for i, (name, read) in enumerate(items):
            try:
                out[i], ok[i] = decode_image(_source(read), size), True
            except Exception as e:
                bad.append((i, f"{name} ({type(e).__name__})"))
            if time.monotonic() - last > 0.5 or i == n - 1:
                report(i + 1, n)
                last = time.monotonic()
        return out[ok], np.flatnonzero(ok).tolist(), [b for _, b in bad]
    import multiprocessing
    import threading

    context = multiprocessing.get_context("fork" if threading.active_count() == 1 and os.name == "posix" else "spawn")
    starts = list(range(0, n, CHUNK))
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        pending: dict = {}
        queue = iter(starts)

        def submit() -> None:
            start = next(queue, None)
            if start is not None:
                chunk = items[start : start + CHUNK]
                pending[pool.submit(_decode_chunk, ([_source_or_error(r) for _, r in chunk], size))] = start

        for _ in range(2 * processes):  # a few chunks ahead of each process, not the whole folder in flight
            submit()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                start = pending.pop(fut)
                stop = min(n, start + CHUNK)
                arr, chunk_bad = fut.result()
                failed = {i for i, _ in chunk_bad}
                good = [start + i for i in range(stop - start) if i not in failed]
                out[good], ok[good] = arr, True
                bad += [(start + i, f"{items[start + i][0]} ({err})") for i, err in chunk_bad]
                done += stop - start
                report(done, n)
                submit()
    return out[ok], np.flatnonzero(ok).tolist(), [b for _, b in sorted(bad)]


def _source(read: Callable[[], bytes | Path]) -> bytes | str:
    """What a decoding process reads: a file's path, or the bytes (a ZIP entry)."""
    src = read()
    return str(src) if isinstance(src, Path) else src


def _source_or_error(read: Callable[[], bytes | Path]) -> bytes | str | tuple[str, str]:
    try:
        return _source(read)
    except Exception as e:  # a damaged ZIP entry: that file is unreadable, the others go on
        return ("unread", type(e).__name__)
