"""On-disk tensor caches in the data folder: decoded datasets (uint8),
frozen-backbone features and teacher logits, so that a second run with the
same inputs starts at once instead of recomputing them.

One file per entry, under `<data folder>/cache/<kind>/`, named by the SHA-256
of its key (a JSON-able dict of everything the tensors depend on). A file is
written to a temporary name and renamed into place, so a reader never sees a
half-written one; on read, the format, the full key and a CRC-32 of every
tensor's bytes are checked. Anything wrong (truncated, corrupt, another key,
an old format) is logged, deleted and reported as a miss: the caller
recomputes and writes it again, it never trains on bad data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from pathlib import Path

import torch

from core import paths

log = logging.getLogger(__name__)

FORMAT = 1
KINDS = ("data", "features", "teacher_logits")


def cache_dir(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    return paths.home() / "cache" / kind


def digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def path_for(kind: str, key: dict) -> Path:
    return cache_dir(kind) / f"{digest(key)[:32]}.pt"


def _crc(t: torch.Tensor) -> int:
    t = t.detach().cpu().contiguous().reshape(-1)
    return zlib.crc32(t.view(torch.uint8).numpy()) if t.numel() else 0


def tensors_digest(tensors) -> str:
    """SHA-256 over (name, shape, dtype, bytes) of named tensors, e.g. a
    model's weights: the identity of 'the same weights' in a cache key."""
    h = hashlib.sha256()
    for name, t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def index_digest(idx: torch.Tensor | None) -> str:
    """The identity of a selection of images (a split's indices)."""
    if idx is None:
        return "all"
    return hashlib.sha256(idx.to(torch.int64).cpu().contiguous().numpy().tobytes()).hexdigest()[:32]


def load(kind: str, key: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) stored under `key`, or None when absent or unusable."""
    path = path_for(kind, key)
    if not path.exists():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        problem = None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            problem = "an unknown format"
        elif obj.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
            problem = "another key"
        else:
            tensors, crcs = obj["tensors"], obj["crc"]
            if set(tensors) != set(crcs) or any(_crc(tensors[k]) != crcs[k] for k in tensors):
                problem = "a checksum mismatch"
    except Exception as e:  # truncated zip, bytes flipped in the header, not a torch file...
        problem = f"an unreadable file ({type(e).__name__})"
    if problem:
        log.warning("cache file %s has %s: deleting it and recomputing", path, problem)
        path.unlink(missing_ok=True)
        return None
    return obj["tensors"], obj.get("meta", {})


def save(kind: str, key: dict, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path | None:
    """Write an entry atomically. A full disk or a read-only data folder only
    costs the reuse: the run goes on."""
    path = path_for(kind, key)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    obj = {"format": FORMAT, "key": json.loads(json.dumps(key, sort_keys=True, default=str)),
           "tensors": tensors, "crc": {k: _crc(v) for k, v in tensors.items()}, "meta": meta or {}}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, tmp)
        os.replace(tmp, path)
        return path
    except OSError as e:
        log.warning("could not write cache file %s (%s): the next run recomputes it", path, e)
        tmp.unlink(missing_ok=True)
        return None
