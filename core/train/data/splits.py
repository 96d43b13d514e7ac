"""Deterministic stratified splits, labels-per-class subsets, and `load`: a
dataset cut into train, validation and test, as a run's trainer cuts it."""

from __future__ import annotations

import torch

from core.errors import ConfigError, DataError
from core.train.data.base import FOLDER_PREFIX, DataBundle, Split
from core.train.data.registry import load_raw
from core.train.data.streaming import _stream_listing


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
                   val_fraction: float, test_fraction: float, class_names: list[str], name: str,
                   given: torch.Tensor | None = None):
    if given is not None:  # train/ val/ test/ folders: used as given; a missing one is cut from train
        train_idx, val_idx, test_idx = (torch.nonzero(given == s).flatten() for s in range(3))
        if not len(test_idx):
            test_part, rest = stratified_split(y[train_idx], (test_fraction,), seed + 2)
            train_idx, test_idx = train_idx[rest], train_idx[test_part]
        if not len(val_idx):
            val_part, rest = stratified_split(y[train_idx], (val_fraction,), seed)
            train_idx, val_idx = train_idx[rest], train_idx[val_part]
    elif test_start is None:
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
            idx = _split_indices(files.y, None, seed, labels_per_class, val_fraction, test_fraction, files.class_names, name,
                                 files.split)
            return DataBundle(name, files.class_names, *(Split(files.take(i), files.y[i], i) for i in idx),
                              files.skipped, files.skipped_examples, files.key)
    raw = load_raw(name, image_size)
    idx = _split_indices(raw.y, raw.test_start, seed, labels_per_class, val_fraction, test_fraction, raw.class_names, name,
                         raw.split)
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
