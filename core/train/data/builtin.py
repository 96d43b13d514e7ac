"""The datasets that come with the app or torchvision: scikit-learn's digits
(bundled, offline), the same digits with a shifted appearance (a target domain
for adaptation), and the torchvision sets, downloaded into the data folder on
first use."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core import paths
from core.errors import DataError
from core.train.data.base import RawData, _decode_all, resize_uint8

log = logging.getLogger(__name__)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images (1797, 8, 8) in 0..16 and labels 0..9. Read from the data file
    scikit-learn ships (load_digits reads the same file) without importing scikit-learn, whose import (scipy with
    it) cost every run process 1.75 s of CPU; load_digits itself when that file is not where it has been."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def _load_digits(size: int) -> RawData:
    images, target = _digits_arrays()
    x = torch.from_numpy(np.round(images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    return RawData(resize_uint8(x, size), torch.from_numpy(target), [str(c) for c in range(10)])


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
