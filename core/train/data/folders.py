"""A person's own images: a folder or ZIP of class folders, listed safely
(links not followed, unsafe ZIP paths and nested archives skipped, ZIP bombs
refused before anything is unpacked) and decoded; and any folder or ZIP of
unlabelled images."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import torch

from core import limits
from core.errors import DataError
from core.train.data.base import (ARCHIVE_SUFFIXES, FOLDER_PREFIX, IMAGE_SUFFIXES, RATIO_FLOOR_BYTES, RawData,
                                  _decode_all)


class _FileRef:
    """Reads one image file; `member` is its path inside the dataset folder `root`."""

    __slots__ = ("root", "member")

    def __init__(self, root: str, member: str):
        self.root, self.member = root, member

    def __call__(self) -> Path:
        return Path(self.root, self.member)


class _ZipRef:
    """Reads one ZIP entry; `member` is its full name in the archive."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
        self.zf, self.info, self.member = zf, info, info.filename

    def __call__(self) -> bytes:
        return self.zf.read(self.info)


def _folder_items(path: Path) -> tuple[dict[str, list[tuple[str, Callable[[], bytes | Path]]]], int, list[str]]:
    """Class name -> [(file name, reader)], plus unsafe/odd entries skipped."""
    classes: dict[str, list] = {}
    skipped, examples = 0, []
    max_files = limits.max_files()
    if path.is_dir():
        seen, root = 0, str(path)
        for cdir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if cdir.is_symlink():  # links are not followed: they could lead out of the allowed folders
                skipped += 1
                examples.append(f"{cdir.name}/ (a link to a folder: not followed)")
                continue
            cname = cdir.name
            classes[cname] = files = []
            # os.scandir's entries know links and files without a stat each; a walk that never
            # follows a link stays inside the class folder, so nothing needs resolving.
            found: list[tuple[tuple[str, ...], bool]] = []
            stack = [((), str(cdir))]
            while stack:
                rel, folder = stack.pop()
                with os.scandir(folder) as entries:
                    for e in entries:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(((*rel, e.name), e.path))
                        elif not e.name.startswith(".") and (e.is_symlink() or e.is_file(follow_symlinks=False)):
                            found.append(((*rel, e.name), e.is_symlink()))
            for parts, link in sorted(found):
                seen += 1
                if seen > max_files:
                    raise DataError(f"{path.name} holds more than {max_files:,} files, over "
                                    f"{limits.MAX_FILES.describe()}: use fewer images, or raise the limit.")
                name = parts[-1]
                dot = name.rfind(".")
                if dot <= 0 or name[dot:].lower() not in IMAGE_SUFFIXES:
                    continue
                if link:
                    skipped += 1
                    examples.append(f"{cname}/{name} (a link: not followed)")
                    continue
                files.append((f"{cname}/{name}", _FileRef(root, "/".join((cname, *parts)))))
        return classes, skipped, examples
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path.name} is not a readable ZIP file ({e}). Upload a ZIP of class folders.") from None
    infos = zf.infolist()
    _check_archive(path, infos)
    max_entry = limits.max_upload_bytes()
    names = []
    for info in infos:
        p = PurePosixPath(info.filename)
        if info.is_dir() or p.name.startswith(".") or "__MACOSX" in p.parts:
            continue
        if p.is_absolute() or ".." in p.parts or (info.external_attr >> 16) & 0o170000 == 0o120000:
            skipped += 1
            examples.append(f"{info.filename} (unsafe path or link)")
            continue
        if p.suffix.lower() in ARCHIVE_SUFFIXES:
            skipped += 1
            examples.append(f"{info.filename} (an archive inside the archive: unpack it into the class folders)")
            continue
        if info.file_size > max_entry and p.suffix.lower() in IMAGE_SUFFIXES:
            skipped += 1
            examples.append(f"{info.filename} ({info.file_size / 2**20:,.0f} MB: over {limits.MAX_UPLOAD_MB.describe()})")
            continue
        names.append((p, info))
    # A ZIP of one wrapping folder ("mydata/cat/1.png") counts from inside it,
    # also when the wrapper holds a loose non-image file ("mydata/README.txt").
    while (names and len({p.parts[0] for p, _ in names}) == 1 and any(len(p.parts) > 2 for p, _ in names)
           and not any(len(p.parts) == 2 and p.suffix.lower() in IMAGE_SUFFIXES for p, _ in names)):
        names = [(PurePosixPath(*p.parts[1:]), i) for p, i in names]
    for p, info in names:
        if len(p.parts) < 2:
            continue  # a loose file beside the class folders
        classes.setdefault(p.parts[0], [])
        if p.suffix.lower() in IMAGE_SUFFIXES:
            classes[p.parts[0]].append((str(p), _ZipRef(zf, info)))
    return dict(sorted(classes.items())), skipped, examples


def _check_archive(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a ZIP bomb before anything is decompressed: too many entries, too
    many bytes once unpacked, or an entry that unpacks to hundreds of times its
    size. Sizes are the ones the archive declares; zipfile never reads past them."""
    if len(infos) > limits.max_files():
        raise DataError(f"{path.name} holds {len(infos):,} entries, over {limits.MAX_FILES.describe()}: "
                        "use fewer images, or raise the limit.")
    total = sum(i.file_size for i in infos)
    if total > limits.max_archive_bytes():
        raise DataError(f"{path.name} unpacks to {total / 2**20:,.0f} MB, over {limits.MAX_ARCHIVE_MB.describe()}: "
                        "use fewer or smaller images (64-256 px is plenty here), or raise the limit.")
    ratio = limits.max_zip_ratio()
    for i in infos:
        if i.file_size > RATIO_FLOOR_BYTES and i.file_size > ratio * max(1, i.compress_size):
            raise DataError(f"{path.name}: entry {i.filename} unpacks to {i.file_size / max(1, i.compress_size):,.0f} times "
                            f"its packed size, over {limits.MAX_ZIP_RATIO.describe()}. That is how a ZIP bomb looks: "
                            "if the archive is yours, zip the images again or raise the limit.")


# Top folders that name splits: a dataset laid out as train/, val/ (or valid/), test/,
# each holding class folders, is used with those splits as given.
SPLIT_FOLDERS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def regroup_splits(classes: dict[str, list]) -> tuple[dict[str, list], list[int]] | None:
    """For a train/ val/ test/ layout: the class folders inside the split
    folders (merged by name, sorted) and each file's split (0 train, 1 val,
    2 test), in the order of the classes' files; None for plain class folders."""
    keys = {k.lower() for k in classes}
    if "train" not in keys or len(keys) < 2 or not keys <= set(SPLIT_FOLDERS):
        return None
    grouped: dict[str, list] = {}
    for split_name, files in classes.items():
        for name, read in files:
            parts = PurePosixPath(read.member).parts
            i = [p.lower() for p in parts].index(split_name.lower())
            if len(parts) - i < 3:
                continue  # a loose file in a split folder: no class
            grouped.setdefault(parts[i + 1], []).append((name, read, SPLIT_FOLDERS[split_name.lower()]))
    names = sorted(grouped)
    return ({c: [(n, r) for n, r, _ in grouped[c]] for c in names}, [t for c in names for _, _, t in grouped[c]])


@dataclass
class Listing:
    """A folder's or ZIP's images by class, from the listing alone (nothing decoded)."""

    classes: dict[str, list[tuple[str, Callable[[], bytes | Path]]]]  # class -> [(name, reader)]
    split: list[int] | None  # each file's split (0 train, 1 val, 2 test) for a train/ val/ test/ layout
    skipped: int  # links and unsafe entries left out
    examples: list[str]

    @property
    def counts(self) -> dict[str, int]:
        return {c: len(files) for c, files in self.classes.items()}


def list_folder(path: Path) -> Listing:
    """The class folders of a folder or ZIP and the image files in each, by
    listing only: cheap for tens of thousands of files."""
    if not path.exists():
        raise DataError(f"Folder or ZIP {path} does not exist. Give a folder with one subfolder per class, or a ZIP of them.")
    classes, skipped, examples = _folder_items(path)
    regrouped = regroup_splits(classes)
    if regrouped is not None:
        return Listing(regrouped[0], regrouped[1], skipped, examples)
    return Listing(classes, None, skipped, examples)


def _load_folder(path: Path, size: int) -> RawData:
    listing = list_folder(path)
    classes = listing.classes
    tags = listing.split or [0] * sum(len(files) for files in classes.values())
    # Each file's split rides on its label (label * 3 + split) through decoding, which drops unreadable files.
    items = [(n, read, label) for label, files in enumerate(classes.values()) for n, read in files]
    items = [(n, read, 3 * label + tag) for (n, read, label), tag in zip(items, tags)]
    x, coded, bad, bad_ex = _decode_all(items, size)
    y, split = coded // 3, (coded % 3 if listing.split is not None else None)
    names = list(classes)
    counts = torch.bincount(y, minlength=len(names)).tolist() if names else []
    check_classes(path, dict(zip(names, counts)), "readable image",
                  [f"{bad} unreadable file(s) skipped, e.g. {bad_ex[0]}"] if bad else [])
    return RawData(x, y, names, None, listing.skipped + bad, (bad_ex + listing.examples)[:10], split=split)


def check_classes(path: Path, counts: dict[str, int], what: str = "image", notes: list[str] | None = None) -> None:
    """Refuse a dataset folder of fewer than two classes or with an empty one,
    naming every problem (and, after them, `notes`) and what is expected."""
    names = list(counts)
    problems = []
    if len(names) < 2:
        problems.append(f"found {len(names)} class folder(s) ({', '.join(names) or 'none'}); at least 2 are needed")
    empty = [n for n, c in counts.items() if c == 0]
    if empty:
        problems.append(f"class folder(s) with no {what}: {', '.join(empty)}")
    if problems:
        raise DataError(f"{path.name} can't be used: " + "; ".join(problems + (notes or []))
                        + ". Expected one subfolder per class, each holding images (PNG, JPEG, ...).")


def load_unlabelled(path: str | Path, size: int, limit: int = 5000) -> tuple[torch.Tensor, list[str], int]:
    """Every image under a folder (any layout, no classes needed) or in a ZIP:
    uint8 (N, 3, S, S), their names, and how many files could not be read."""
    p = Path(str(path).removeprefix(FOLDER_PREFIX)).expanduser()
    if not p.exists():
        raise DataError(f"Folder or ZIP {p} does not exist: give a folder (or .zip) of images.")
    items: list[tuple[str, Callable[[], bytes | Path], int]] = []
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith(".") and not f.is_symlink())
        items = [(str(f.relative_to(p)), (lambda f=f: f), 0) for f in files[:limit]]
    else:
        try:
            zf = zipfile.ZipFile(p)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{p.name} is not a readable ZIP file ({e}): give a folder or ZIP of images.") from None
        for info in zf.infolist():
            q = PurePosixPath(info.filename)
            if (info.is_dir() or q.name.startswith(".") or "__MACOSX" in q.parts or q.is_absolute() or ".." in q.parts
                    or q.suffix.lower() not in IMAGE_SUFFIXES):
                continue
            items.append((str(q), (lambda info=info: zf.read(info)), 0))
        items = items[:limit]
    x, _, bad, _ = _decode_all(items, size)
    if len(x) == 0:
        raise DataError(f"No readable image in {p}" + (f" ({bad} file(s) could not be read)" if bad else "")
                        + ": PNG, JPEG, WebP, BMP, GIF or TIFF files are needed.")
    names = [n for n, _, _ in items]
    if bad:  # which ones failed is only sampled: number the readable ones instead of misnaming them
        names = [f"image {i + 1}" for i in range(len(x))]
    return x, names, bad
