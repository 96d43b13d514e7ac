"""Datasets: registry, decoding into uint8 tensors, deterministic stratified
splits, labels-per-class subsets, and batch transforms run on the device.

Every dataset is decoded once into a uint8 tensor (N, C, S, S) at the run's
image size, kept on disk in the data folder's cache (so the next run with
the same images and size starts at once); normalisation and augmentation
happen per batch on whatever device trains, so an epoch costs no image
decoding. A folder too large to hold decoded (over TLAB_IN_MEMORY_MB)
streams from its files through DataLoader workers instead (`ImageFiles`,
`Batches`).

The pieces, each importing only those above it in this list:
  base        the dataclasses (DatasetSpec, RawData, Split, DataBundle) and image decoding
  builtin     scikit-learn's digits (and their shifted twin) and the torchvision sets
  folders     a person's folder or ZIP of class folders, safely listed; unlabelled images
              (decoding itself, on every core, is core.train.decode)
  registry    REGISTRY, get, availability, and decoded images cached in memory and on disk
  streaming   folders too large for memory, read by DataLoader workers; Batches for any split
  splits      stratified splits, labels per class, `load` and `run_split`
  transforms  uint8 batch -> model input
  augment     batched, seeded augmentation on the device (Kornia), by level and knobs
Callers use `from core.train import data` and the names below.
"""

from __future__ import annotations

from core.train.data.base import (ARCHIVE_SUFFIXES, FOLDER_PREFIX, IMAGE_SUFFIXES, RATIO_FLOOR_BYTES, DataBundle,
                                  DatasetSpec, RawData, Split, decode_image, resize_uint8)
from core.train.data.builtin import SHIFT_BACKGROUND, SHIFT_CONTRAST, SHIFT_NOISE, SHIFT_SEED, shift_appearance
from core.train.data.folders import Listing, check_classes, list_folder, load_unlabelled
from core.train.data.registry import (DECODE_VERSION, REGISTRY, _raw_cached, availability, canonical, decoded,
                                      folder_path, get, load_raw, source_stamp)
from core.train.data.splits import SPLITS, load, per_class_subset, run_split, stratified_split
from core.train.data.streaming import IN_MEMORY_MB, Batches, ImageFiles, stream_workers
from core.train.data.augment import LEVELS, Augmenter, Policy, augment, describe, policy_of
from core.train.data.transforms import batch_input, normalise, to_input, to_unit

__all__ = [
    "ARCHIVE_SUFFIXES", "FOLDER_PREFIX", "IMAGE_SUFFIXES", "RATIO_FLOOR_BYTES", "DataBundle", "DatasetSpec", "RawData",
    "Split", "decode_image", "resize_uint8", "SHIFT_BACKGROUND", "SHIFT_CONTRAST", "SHIFT_NOISE", "SHIFT_SEED",
    "shift_appearance", "Listing", "check_classes", "list_folder", "load_unlabelled", "canonical", "decoded", "DECODE_VERSION", "REGISTRY", "_raw_cached", "availability", "folder_path",
    "get", "load_raw", "source_stamp", "SPLITS", "load", "per_class_subset", "run_split", "stratified_split",
    "IN_MEMORY_MB", "Batches", "ImageFiles", "stream_workers", "augment", "batch_input", "normalise", "to_input",
    "to_unit", "LEVELS", "Augmenter", "Policy", "describe", "policy_of",
]
