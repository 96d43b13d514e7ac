"""Datasets: registry, decoding into uint8 tensors, deterministic stratified
splits, labels-per-class subsets, and batch transforms run on the device.

Every dataset is decoded once into a uint8 tensor (N, C, S, S) at the run's
image size, kept on disk in the data folder's cache (so the next run with
the same images and size starts at once); normalisation and augmentation
happen per batch on whatever device trains, so an epoch costs no image
decoding. A folder too large to hold decoded (over TLAB_IN_MEMORY_MB)
streams from its files through DataLoader workers instead (`ImageFiles`,
`Batches`).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core import limits, paths
from core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"}
# Below this size an entry's compression ratio says nothing (a blank icon compresses 1000x).
RATIO_FLOOR_BYTES = 1 << 20


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


# --- decoding helpers -----------------------------------------------------


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


# --- bundled: scikit-learn digits ---------------------------------------------


def _load_digits(size: int) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    return RawData(resize_uint8(x, size), torch.from_numpy(d.target.astype(np.int64)), [str(c) for c in d.target_names])


# Digits under a fixed change of appearance: a target domain for adaptation
# (core.lessons.adapt). Lower contrast on a grey background plus pixel noise, drawn
# from a fixed seed, so every load gives the same images.
SHIFT_CONTRAST, SHIFT_BACKGROUND, SHIFT_NOISE, SHIFT_SEED = 0.35, 0.45, 0.08, 20_160_113


def shift_appearance(x: torch.Tensor, seed: int = SHIFT_SEED) -> torch.Tensor:
    """uint8 images -> the same images with lower contrast, a grey background and noise."""
    g = torch.Generator().manual_seed(seed)
    u = x.float() / 255.0
    u = SHIFT_BACKGROUND + SHIFT_CONTRAST * u + SHIFT_NOISE * torch.randn(u.shape, generator=g)
    return (u.clamp(0, 1) * 255.0).round().to(torch.uint8)


def _load_digits_shifted(size: int) -> RawData:
    raw = _load_digits(size)
    return RawData(shift_appearance(raw.x), raw.y, raw.class_names)


# --- torchvision sets ---------------------------------------------------------


def _tv_open(cls_name: str, title: str, **kwargs):
    """Open a torchvision dataset from the data folder, downloading it on first use."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = paths.datasets_dir()
    try:
        return cls(str(root), download=False, **kwargs)
    except (RuntimeError, FileNotFoundError):
        pass
    log.info("%s not found in %s: downloading", title, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        return cls(str(root), download=True, **kwargs)
    except Exception as e:
        # One line: torchvision's messages can span lines (MNIST lists every mirror).
        reason = " ".join(str(e).split())
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise DataError(
            f"{title} is not in {root} and could not be downloaded ({type(e).__name__}: {reason}). "
            f"Connect to the internet once so it can download, or copy the torchvision files into {root}; "
            "the bundled 'digits' dataset works offline."
        ) from None


def _array_set(cls_name: str, title: str, channels_last: bool) -> Callable[[int], RawData]:
    def load(size: int) -> RawData:
        parts = [_tv_open(cls_name, title, train=True), _tv_open(cls_name, title, train=False)]
        xs, ys = [], []
        for ds in parts:
            data = torch.as_tensor(np.asarray(ds.data))
            data = data.permute(0, 3, 1, 2) if channels_last else data[:, None]
            xs.append(resize_uint8(data, size))
            ys.append(torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))
        return RawData(torch.cat(xs), torch.cat(ys), list(parts[0].classes), test_start=len(ys[0]))

    return load


def _compact(labels: list[int], names: list[str]) -> tuple[list[int], list[str]]:
    """Renumber labels 0..k-1 over the classes present."""
    present = sorted(set(labels))
    remap = {old: i for i, old in enumerate(present)}
    return [remap[l] for l in labels], [names[i] for i in present]


def _file_set(title: str, open_splits: Callable[[], tuple[list, list | None, list[str]]]) -> Callable[[int], RawData]:
    """Datasets of image files: open_splits() gives (train items, test items
    or None, class names), items being (path, label)."""

    def load(size: int) -> RawData:
        train, test, names = open_splits()
        items = train + (test or [])
        labels, names = _compact([l for _, l in items], names)
        todo = [(Path(p).name, (lambda p=p: Path(p)), l) for (p, _), l in zip(items, labels)]
        x, y, bad, ex = _decode_all(todo, size)
        if bad:  # keep the official split boundary right when files were skipped
            raise DataError(f"{title}: {bad} file(s) could not be read, e.g. {ex[0]}. Delete the dataset folder and download it again.")
        return RawData(x, y, names, test_start=len(train) if test is not None else None)

    return load


def _flowers() -> tuple[list, list, list[str]]:
    splits = [_tv_open("Flowers102", "Flowers-102", split=s) for s in ("train", "val", "test")]
    train = [(p, l) for ds in splits[:2] for p, l in zip(ds._image_files, ds._labels)]
    test = list(zip(splits[2]._image_files, splits[2]._labels))
    return train, test, list(splits[0].classes)


def _pets() -> tuple[list, list, list[str]]:
    splits = [_tv_open("OxfordIIITPet", "Oxford-IIIT Pets", split=s) for s in ("trainval", "test")]
    names = splits[0].classes
    return list(zip(splits[0]._images, splits[0]._labels)), list(zip(splits[1]._images, splits[1]._labels)), names


def _eurosat() -> tuple[list, None, list[str]]:
    ds = _tv_open("EuroSAT", "EuroSAT")
    return list(ds.samples), None, list(ds.classes)


# --- a user's own images: folder or ZIP of class folders ----------------------


class _FileRef:
    """Reads one image file; `member` is its path inside the dataset folder."""

    def __init__(self, path: Path, member: str):
        self.path, self.member = path, member

    def __call__(self) -> Path:
        return self.path


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
        root = path.resolve()
        seen = 0
        for cdir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if cdir.is_symlink():  # links are not followed: they could lead out of the allowed folders
                skipped += 1
                examples.append(f"{cdir.name}/ (a link to a folder: not followed)")
                continue
            classes[cdir.name] = []
            for f in sorted(cdir.rglob("*")):
                if f.name.startswith(".") or not (f.is_file() or f.is_symlink()):
                    continue
                seen += 1
                if seen > max_files:
                    raise DataError(f"{path.name} holds more than {max_files:,} files, over "
                                    f"{limits.MAX_FILES.describe()}: use fewer images, or raise the limit.")
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if f.is_symlink() or root not in f.resolve().parents:
                    skipped += 1
                    examples.append(f"{cdir.name}/{f.name} (a link: not followed)")
                    continue
                classes[cdir.name].append((f"{cdir.name}/{f.name}", _FileRef(f, str(f.relative_to(path)))))
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


def _load_folder(path: Path, size: int) -> RawData:
    if not path.exists():
        raise DataError(f"Folder or ZIP {path} does not exist. Give a folder with one subfolder per class, or a ZIP of them.")
    classes, skipped, examples = _folder_items(path)
    items = [(n, read, label) for label, files in enumerate(classes.values()) for n, read in files]
    x, y, bad, bad_ex = _decode_all(items, size)
    names = list(classes)
    counts = torch.bincount(y, minlength=len(names)).tolist() if names else []
    problems = []
    if len(names) < 2:
        problems.append(f"found {len(names)} class folder(s) ({', '.join(names) or 'none'}); at least 2 are needed")
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty:
        problems.append(f"class folder(s) with no readable image: {', '.join(empty)}")
    if problems:
        if bad:
            problems.append(f"{bad} unreadable file(s) skipped, e.g. {bad_ex[0]}")
        raise DataError(
            f"{path.name} can't be used: " + "; ".join(problems)
            + ". Expected one subfolder per class, each holding images (PNG, JPEG, ...)."
        )
    return RawData(x, y, names, None, skipped + bad, (examples + bad_ex)[:10])


# --- the registry -------------------------------------------------------------

_SPECS = [
    DatasetSpec("digits", "Digits (scikit-learn)", "bundled",
                "1,797 real 8x8 handwritten digits, 10 classes; ships with scikit-learn, works offline.", _load_digits),
    DatasetSpec("digits_shifted", "Digits, shifted appearance", "bundled",
                "The same 1,797 digits with lower contrast, a grey background and noise (fixed seed): "
                "a target domain for adaptation; its labels only score it.", _load_digits_shifted),
    DatasetSpec("mnist", "MNIST", "torchvision", "70,000 28x28 handwritten digits, 10 classes.", _array_set("MNIST", "MNIST", False)),
    DatasetSpec("fashion_mnist", "Fashion-MNIST", "torchvision", "70,000 28x28 clothing images, 10 classes.",
                _array_set("FashionMNIST", "Fashion-MNIST", False)),
    DatasetSpec("cifar10", "CIFAR-10", "torchvision", "60,000 32x32 colour images, 10 classes.", _array_set("CIFAR10", "CIFAR-10", True)),
    DatasetSpec("cifar100", "CIFAR-100", "torchvision", "60,000 32x32 colour images, 100 classes.", _array_set("CIFAR100", "CIFAR-100", True)),
    DatasetSpec("flowers102", "Flowers-102", "torchvision", "8,189 flower photos, 102 classes.", _file_set("Flowers-102", _flowers)),
    DatasetSpec("oxford_pets", "Oxford-IIIT Pets", "torchvision", "7,349 cat and dog photos, 37 breeds.", _file_set("Oxford-IIIT Pets", _pets)),
    DatasetSpec("eurosat", "EuroSAT", "torchvision", "27,000 64x64 Sentinel-2 satellite tiles, 10 land-use classes.", _file_set("EuroSAT", _eurosat)),
]

REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in _SPECS}
FOLDER_PREFIX = "folder:"


def folder_path(name: str) -> Path:
    """The folder or ZIP of a `folder:PATH` dataset, resolved and checked to
    lie under an allowed root (the data folder and $TLAB_FOLDER_ROOTS)."""
    raw = name[len(FOLDER_PREFIX):]
    if not raw.strip():
        raise ConfigError("folder: needs a path, e.g. folder:./my_images or folder:./my_images.zip.")
    return paths.check_readable(raw)


def get(name: str) -> DatasetSpec:
    if name.startswith(FOLDER_PREFIX):
        path = folder_path(name)
        return DatasetSpec(name, f"Your images ({path.name})", "folder", f"Class folders in {path}",
                           lambda size, path=path: _load_folder(path, size))
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"Unknown dataset {name!r}. Choose one of: {', '.join(REGISTRY)}, or folder:PATH for your own images."
        ) from None


_TV_CLASSES = {"mnist": ("MNIST", {}), "fashion_mnist": ("FashionMNIST", {}), "cifar10": ("CIFAR10", {}),
               "cifar100": ("CIFAR100", {}), "flowers102": ("Flowers102", {"split": "test"}),
               "oxford_pets": ("OxfordIIITPet", {"split": "test"}), "eurosat": ("EuroSAT", {})}


def availability(spec: DatasetSpec) -> str:
    """'bundled', 'local' (a folder), 'downloaded', or 'download' (needs the
    network on first use). Never downloads."""
    if spec.source != "torchvision":
        return "bundled" if spec.source == "bundled" else "local"
    import torchvision.datasets as tvd

    cls_name, kwargs = _TV_CLASSES[spec.name]
    try:
        getattr(tvd, cls_name)(str(paths.datasets_dir()), download=False, **kwargs)
        return "downloaded"
    except Exception:
        return "download"


# Bump when decoding changes what a cached tensor holds: old cache files then miss.
DECODE_VERSION = 1
_TV_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py",
               "cifar100": "cifar-100-python", "flowers102": "flowers-102", "oxford_pets": "oxford-iiit-pet",
               "eurosat": "eurosat"}


def _files_stamp(p: Path) -> tuple:
    """(entries, newest mtime, total size) of a file or of everything under a
    folder: images added, removed or replaced inside class folders change it,
    while the top folder's own mtime would not."""
    if not p.exists():
        return (-1, 0, 0)
    if not p.is_dir():
        st = p.stat()
        return (1, st.st_mtime_ns, st.st_size)
    st = p.stat()
    count, newest, total = 0, st.st_mtime_ns, 0
    for dirpath, dirnames, filenames in os.walk(p):
        for n in dirnames + filenames:
            try:
                st = os.stat(os.path.join(dirpath, n))
            except OSError:
                continue
            count, newest, total = count + 1, max(newest, st.st_mtime_ns), total + st.st_size
    return (count, newest, total)


def source_stamp(name: str) -> tuple:
    """What the decoded images of a dataset depend on besides the image size:
    the files (count, newest mtime, bytes) for a folder or a downloaded set,
    scikit-learn's version for the bundled digits."""
    if name.startswith(FOLDER_PREFIX):
        p = folder_path(name)
        return (str(p), *_files_stamp(p))
    if name in _TV_FOLDERS:
        return (str(paths.datasets_dir().resolve()), *_files_stamp(paths.datasets_dir() / _TV_FOLDERS[name]))
    import sklearn

    return ("sklearn", sklearn.__version__)


@functools.lru_cache(maxsize=4)
def _raw_cached(name: str, size: int, stamp: tuple) -> RawData:
    """Decoded images: from this process's memory, else from the data
    folder's uint8 cache (one file per dataset, image size and files' stamp),
    else decoded and written there for the next run."""
    from core.train import cache

    key = {"dataset": name, "size": size, "stamp": list(stamp), "decode": DECODE_VERSION}
    digest = cache.digest(key)
    hit = cache.load("data", key)
    if hit is not None:
        tensors, meta = hit
        log.info("%s at %dpx: decoded images read from the cache", name, size)
        return RawData(tensors["x"], tensors["y"], meta["class_names"], meta["test_start"], meta["skipped"],
                       meta["skipped_examples"], digest)
    raw = get(name).loader(size)
    raw.key = digest
    cache.save("data", key, {"x": raw.x, "y": raw.y},
               {"class_names": list(raw.class_names), "test_start": raw.test_start, "skipped": raw.skipped,
                "skipped_examples": list(raw.skipped_examples)})
    return raw


def load_raw(name: str, size: int) -> RawData:
    """Decoded images, cached per (dataset, image size, files' stamp): in this
    process, and on disk in the data folder."""
    get(name)  # an unknown name is an error before any file is looked at
    return _raw_cached(name, size, source_stamp(name))


# --- splits -------------------------------------------------------------------


def stratified_split(y: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Per class, shuffle with `seed` and cut into parts of the given
    fractions (the last part takes the rest). Every part of a class with
    enough images gets at least one. Deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n, start = len(idx), 0
        for k, f in enumerate(fractions):
            take = max(1, round(n * f)) if n > len(fractions) + 1 else (1 if start < n - 1 else 0)
            parts[k].append(idx[start : start + take])
            start += take
        parts[-1].append(idx[start:])
    return [torch.sort(torch.cat(p)).values if p else torch.empty(0, dtype=torch.long) for p in parts]


def per_class_subset(y: torch.Tensor, k: int, seed: int, class_names: list[str]) -> torch.Tensor:
    """Indices of k examples per class (seeded)."""
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for c in range(len(class_names)):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < k:
            raise ConfigError(
                f"labels per class is {k}, but class {class_names[c]!r} has only {len(idx)} training "
                f"image(s): use at most {min(int((y == i).sum()) for i in range(len(class_names)))}, or leave it empty for all."
            )
        out.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.sort(torch.cat(out)).values


def _split_indices(y: torch.Tensor, test_start: int | None, seed: int, labels_per_class: int | None,
                   val_fraction: float, test_fraction: float, class_names: list[str], name: str):
    if test_start is None:
        val_idx, test_idx, train_idx = stratified_split(y, (val_fraction, test_fraction), seed)
    else:
        pool = torch.arange(test_start)
        v, t = stratified_split(y[:test_start], (val_fraction,), seed)
        val_idx, train_idx = pool[v], pool[t]
        test_idx = torch.arange(test_start, len(y))
    if labels_per_class is not None:
        train_idx = train_idx[per_class_subset(y[train_idx], labels_per_class, seed, class_names)]
    if min(len(train_idx), len(val_idx), len(test_idx)) == 0:
        raise DataError(f"{name} is too small to split into train, validation and test sets: add images (3 or more per class).")
    return train_idx, val_idx, test_idx


def load(name: str, image_size: int, seed: int = 0, labels_per_class: int | None = None,
         val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """A dataset cut into train, validation and test splits. Decoded into
    memory (uint8) when it fits under the in-memory limit; a folder too large
    for that streams its files through a DataLoader instead (`ImageFiles`)."""
    if name.startswith(FOLDER_PREFIX):
        files = _stream_listing(name, image_size)
        if files is not None:
            idx = _split_indices(files.y, None, seed, labels_per_class, val_fraction, test_fraction, files.class_names, name)
            return DataBundle(name, files.class_names, *(Split(files.take(i), files.y[i], i) for i in idx),
                              files.skipped, files.skipped_examples, files.key)
    raw = load_raw(name, image_size)
    idx = _split_indices(raw.y, raw.test_start, seed, labels_per_class, val_fraction, test_fraction, raw.class_names, name)
    return DataBundle(name, raw.class_names, *(Split(raw.x[i], raw.y[i], i) for i in idx), raw.skipped,
                      raw.skipped_examples, raw.key)


SPLITS = ("train", "val", "test")


def run_split(config: dict, which: str = "test") -> Split:
    """The images of one split of a run, exactly as its trainer cut them
    (dataset, image size, seed, fractions and labels per class from the
    run's config dict, as stored in its checkpoint)."""
    if which not in SPLITS:
        raise ConfigError(f"Unknown split {which!r}: use one of {', '.join(SPLITS)}.")
    bundle = load(str(config["dataset"]), int(config["image_size"]), int(config.get("seed", 0)),
                  config.get("labels_per_class"), float(config.get("val_fraction", 0.15)),
                  float(config.get("test_fraction", 0.15)))
    return getattr(bundle, which)


# --- large folders: streamed through a DataLoader -------------------------------


def _default_in_memory_mb() -> float:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return float(min(8192, max(256, ram // 4 >> 20)))


# Decoded uint8 images (N x 3 x S x S bytes) up to this size are kept in memory
# (and on the training device); a folder above it streams from its files.
IN_MEMORY_MB = limits.Limit("decoded images kept in memory", "TLAB_IN_MEMORY_MB", _default_in_memory_mb(), "MB")


class ImageFiles(torch.utils.data.Dataset):
    """The images of a folder or ZIP, decoded one at a time when asked: for
    datasets too large to hold decoded. Items are (uint8 (3, S, S), ok);
    an unreadable file gives ok=False and is dropped from its batch."""

    def __init__(self, source: Path, names: list[str], size: int, key: str, y: torch.Tensor,
                 class_names: list[str], skipped: int = 0, skipped_examples: list[str] | None = None):
        self.source, self.names, self.size, self.key, self.y = source, names, size, key, y
        self.class_names, self.skipped, self.skipped_examples = class_names, skipped, skipped_examples or []
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
    classes, skipped, examples = _folder_items(path)
    n = sum(len(v) for v in classes.values())
    if n * 3 * size * size <= IN_MEMORY_MB.value() * 2**20:
        return None
    names = list(classes)
    problems = []
    if len(names) < 2:
        problems.append(f"found {len(names)} class folder(s) ({', '.join(names) or 'none'}); at least 2 are needed")
    empty = [c for c, files in classes.items() if not files]
    if empty:
        problems.append(f"class folder(s) with no image: {', '.join(empty)}")
    if problems:
        raise DataError(f"{path.name} can't be used: " + "; ".join(problems)
                        + ". Expected one subfolder per class, each holding images (PNG, JPEG, ...).")
    files = [read.member for cls in classes.values() for _, read in cls]
    y = torch.tensor([label for label, cls in enumerate(classes.values()) for _ in cls], dtype=torch.int64)
    from core.train import cache

    key = cache.digest({"dataset": name, "size": size, "stamp": list(source_stamp(name)), "decode": DECODE_VERSION})
    log.info("%s: %d images at %dpx pass %s: streaming them from the files", name, n, size, IN_MEMORY_MB.describe())
    return ImageFiles(path, files, size, key, y, names, skipped, examples[:10])


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


# --- batch transforms (on the training device) ---------------------------------


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, S, S) -> float in [0, 1], (B, 3, S, S)."""
    x = x.float().div_(255.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def to_input(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 (B, C, S, S) on any device -> normalised float (B, 3, S, S)."""
    return normalise(to_unit(x), mean, std)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, random-resized crop (scale 0.6-1, aspect 3/4-4/3)
    and colour jitter, per image, batched. x: float in [0, 1], (B, 3, S, S)."""
    b = x.shape[0]
    dev = x.device

    def rand(*shape):  # drawn where the generator lives (the training device, in the engine)
        return torch.rand(*shape, generator=g, device=g.device).to(dev)

    scale = 0.6 + 0.4 * rand(b)
    log_ratio = (rand(b) - 0.5) * 2 * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    sw = torch.sqrt(scale * ratio).clamp(max=1.0)
    sh = torch.sqrt(scale / ratio).clamp(max=1.0)
    tx = (rand(b) * 2 - 1) * (1 - sw)
    ty = (rand(b) * 2 - 1) * (1 - sh)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    bright = (0.8 + 0.4 * rand(b)).view(b, 1, 1, 1)
    contrast = (0.8 + 0.4 * rand(b)).view(b, 1, 1, 1)
    sat = (0.8 + 0.4 * rand(b)).view(b, 1, 1, 1)
    x = x * bright
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * sat + grey
    return x.clamp_(0, 1)


def batch_input(x: torch.Tensor, mean: tuple, std: tuple, g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 batch -> model input; augmented when a generator is given."""
    if g is None:
        return to_input(x, mean, std)
    return normalise(augment(to_unit(x), g), mean, std)


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
