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

The caches are capped (`TLAB_CACHE_MB`, default a quarter of what the caches
and the free disk hold together): before an entry is written, the least
recently used entries go first (a read refreshes an entry's mtime), never
one a running job has read or written: a job holds a lease
(`<data folder>/cache/leases/<run id>-<pid>.json`: its pid and the entries) from
`lease(run_id)` until it ends; a lease whose process is gone counts for
nothing. An entry that doesn't fit the cap or the free disk is not written
(logged): the run goes on without reuse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from core import children, limits, paths

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


def _read(path: Path, key: dict | None) -> tuple[dict | None, str | None]:
    """(the entry, None) or (None, what is wrong with it)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        problem = None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            problem = "an unknown format"
        elif key is not None and obj.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
            problem = "another key"
        else:
            tensors, crcs = obj["tensors"], obj["crc"]
            if set(tensors) != set(crcs) or any(_crc(tensors[k]) != crcs[k] for k in tensors):
                problem = "a checksum mismatch"
    except Exception as e:  # truncated zip, bytes flipped in the header, not a torch file...
        problem = f"an unreadable file ({type(e).__name__})"
    return (None, problem) if problem else (obj, None)


def damage(path: Path) -> str | None:
    """What is wrong with a cache file (format, CRCs), or None; nothing is deleted."""
    return _read(path, None)[1]


@contextmanager
def building(kind: str, key: dict) -> Iterator[None]:
    """Held while this process computes an entry: another process about to
    compute the same one waits here, then finds it written (a lock file beside
    the entry; no lock where the OS has no flock)."""
    try:
        import fcntl
    except ImportError:  # Windows: each process computes its own
        yield
        return
    lock = path_for(kind, key).with_suffix(".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "w")
    except OSError:  # a read-only data folder: nothing will be written either
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load(kind: str, key: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) stored under `key`, or None when absent or unusable."""
    path = path_for(kind, key)
    if not path.exists():
        return None
    _use(path)  # leased before it is read: an eviction meanwhile would skip it
    obj, problem = _read(path, key)
    if problem:
        log.warning("cache file %s has %s: deleting it and recomputing", path, problem)
        path.unlink(missing_ok=True)
        return None
    try:
        os.utime(path)  # most recently used: evicted last
    except OSError:
        pass
    return obj["tensors"], obj.get("meta", {})


def save(kind: str, key: dict, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path | None:
    """Write an entry atomically. A full disk or a read-only data folder only
    costs the reuse: the run goes on."""
    path = path_for(kind, key)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    obj = {"format": FORMAT, "key": json.loads(json.dumps(key, sort_keys=True, default=str)),
           "tensors": tensors, "crc": {k: _crc(v) for k, v in tensors.items()}, "meta": meta or {}}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    need = sum(t.nelement() * t.element_size() for t in tensors.values()) + (64 << 10)
    if not make_room(need, path):
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _use(path)
        torch.save(obj, tmp)
        os.replace(tmp, path)
        return path
    except OSError as e:
        log.warning("could not write cache file %s (%s): the next run recomputes it", path, e)
        tmp.unlink(missing_ok=True)
        return None


# --- the cap, least recently used first, leases -------------------------------

_job: dict | None = None  # this process's lease: {"run_id", "file", "entries"}


def _leases_dir() -> Path:
    return paths.home() / "cache" / "leases"


@contextmanager
def lease(run_id: str) -> Iterator[None]:
    """While the block runs (one job), every entry it reads or writes is kept from eviction."""
    global _job
    before = _job
    # One file per process: under torchrun every rank of the run holds its own.
    _job = {"run_id": paths.check_run_id(run_id), "file": _leases_dir() / f"{run_id}-{os.getpid()}.json", "entries": []}
    try:
        yield
    finally:
        _job["file"].unlink(missing_ok=True)
        _job = before


def _use(path: Path) -> None:
    if _job is None or path.name in _job["entries"]:
        return
    _job["entries"].append(path.name)
    pid = os.getpid()
    body = json.dumps({"pid": pid, "pid_start": children.pid_start(pid), "entries": _job["entries"]})
    try:
        _job["file"].parent.mkdir(parents=True, exist_ok=True)
        tmp = _job["file"].with_suffix(".tmp")
        tmp.write_text(body)
        os.replace(tmp, _job["file"])
    except OSError as e:  # a full disk: the job still reads what it has; log it
        log.warning("could not record the cache lease of run %s (%s)", _job["run_id"], e)


def leased() -> set[str]:
    """Names of the entries running jobs hold; leases of processes that are gone are removed."""
    held: set[str] = set()
    for f in _leases_dir().glob("*.json"):
        try:
            lease_ = json.loads(f.read_text())
            alive = children.pid_alive(int(lease_["pid"]), lease_.get("pid_start"))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours: keep it, protect nothing from it
        if alive:
            held.update(lease_.get("entries", []))
        else:
            f.unlink(missing_ok=True)
    return held


def entries() -> list[tuple[float, int, Path]]:
    """(last used, bytes, path) of every cache entry, by stat only."""
    found = []
    for kind in KINDS:
        try:
            with os.scandir(cache_dir(kind)) as it:
                for e in it:
                    if e.name.endswith(".pt"):
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        found.append((st.st_mtime, st.st_size, Path(e.path)))
        except OSError:
            continue
    return found


def cap_bytes(cached: int | None = None) -> int:
    """TLAB_CACHE_MB, or a quarter of what the caches and the free disk hold together."""
    if os.environ.get(limits.CACHE_MB.env, "").strip():
        return int(limits.CACHE_MB.value() * 2**20)
    from core.train.checkpoint import free_bytes

    cached = sum(e[1] for e in entries()) if cached is None else cached
    return (cached + free_bytes(paths.home())) // 4


def make_room(need: int, path: Path | None = None) -> bool:
    """Evict least recently used entries (never a leased one) until `need` more
    bytes fit the cap and the free disk. False (logged) when they can't."""
    from core.train.checkpoint import free_bytes

    found = sorted(entries())
    total = sum(e[1] for e in found)
    cap = cap_bytes(total)
    if need > cap:
        log.warning("cache entry %s (%.1f MB) is larger than the cache cap (%.1f MB, %s): not written",
                    path, need / 2**20, cap / 2**20, limits.CACHE_MB.env)
        return False
    held = leased()
    for _, size, victim in found:
        if total + need <= cap and free_bytes(paths.home()) >= need + (1 << 20):
            break
        if victim.name in held or victim == path:
            continue
        victim.unlink(missing_ok=True)
        total -= size
        log.info("cache: evicted %s (%.1f MB, least recently used) to stay under %.1f MB", victim, size / 2**20, cap / 2**20)
    if total + need > cap:
        log.warning("cache: %.1f MB held by running jobs leave no room for %s under the cap (%.1f MB)",
                    total / 2**20, path, cap / 2**20)
        return False
    free = free_bytes(paths.home())
    if free < need + (1 << 20):
        log.warning("not enough free disk space for the cache entry %s (%.1f MB needed, %.1f MB free): "
                    "the run goes on without it", path, need / 2**20, free / 2**20)
        return False
    return True
