"""The registry of datasets, what is available offline, and decoded images
cached per (dataset, image size, files' stamp): in this process and on disk
in the data folder."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from core import paths
from core.errors import ConfigError
from core.train.data.base import FOLDER_PREFIX, DatasetSpec, RawData
from core.train.data.builtin import _array_set, _eurosat, _file_set, _flowers, _load_digits, _load_digits_shifted, _pets
from core.train.data.folders import _load_folder

log = logging.getLogger(__name__)

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
DECODE_VERSION = 3  # 2: a train/ val/ test/ folder layout keeps its splits; 3: JPEGs decoded at reduced scale (draft)
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
    from importlib.metadata import version  # not `import sklearn`: 1.75 s of CPU for a version string

    return ("sklearn", version("scikit-learn"))


@functools.lru_cache(maxsize=4)
def _raw_cached(name: str, size: int, stamp: tuple) -> RawData:
    """Decoded images: from this process's memory, else from the data
    folder's uint8 cache (one file per dataset, image size and files' stamp),
    else decoded and written there for the next run."""
    from core.train import cache

    key = {"dataset": name, "size": size, "stamp": list(stamp), "decode": DECODE_VERSION}  # _data_key's
    digest = cache.digest(key)

    def cached() -> RawData | None:
        hit = cache.load("data", key)
        if hit is None:
            return None
        tensors, meta = hit
        log.info("%s at %dpx: decoded images read from the cache", name, size)
        return RawData(tensors["x"], tensors["y"], meta["class_names"], meta["test_start"], meta["skipped"],
                       meta["skipped_examples"], digest, tensors.get("split"))

    raw = cached()
    if raw is not None:
        return raw
    with cache.building("data", key):  # a page's decode and a run's: one decodes, the other waits and reads
        raw = cached()
        if raw is not None:
            return raw
        raw = get(name).loader(size)
        raw.key = digest
        cache.save("data", key, {"x": raw.x, "y": raw.y, **({"split": raw.split} if raw.split is not None else {})},
                   {"class_names": list(raw.class_names), "test_start": raw.test_start, "skipped": raw.skipped,
                    "skipped_examples": list(raw.skipped_examples)})
    return raw


def canonical(name: str) -> str:
    """The dataset's name as caches key it: `folder:` and the resolved path, so
    ./photos, photos/ and /home/me/photos share one decoded copy."""
    return f"{FOLDER_PREFIX}{folder_path(name)}" if name.startswith(FOLDER_PREFIX) else name


def _data_key(name: str, size: int) -> dict:
    return {"dataset": name, "size": size, "stamp": list(source_stamp(name)), "decode": DECODE_VERSION}


def load_raw(name: str, size: int) -> RawData:
    """Decoded images, cached per (dataset, image size, files' stamp): in this
    process, and on disk in the data folder."""
    get(name)  # an unknown name is an error before any file is looked at
    name = canonical(name)
    return _raw_cached(name, size, source_stamp(name))


def decoded(name: str, size: int) -> bool:
    """Whether the data folder holds this dataset decoded at `size` (the next load reads it, decoding nothing)."""
    from core.train import cache

    name = canonical(name)
    return cache.path_for("data", _data_key(name, size)).exists()
