"""What the data folder holds and how to thin it: sizes by kind (`du`), runs
and groups deleted with their folders, orphans (a run folder with no row, a
row whose folder is gone).

Sizes come from `os.scandir` (a stat per file, no file read, links not
followed), so a folder of months of runs is measured in a second or two.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.runs.schema import DB_NAME, TERMINAL, StoreError

# Top-level folders of the data folder that are not run folders, with the kind
# `du` reports them under. Anything else that is a folder is a run's.
KIND_OF_FOLDER = {
    "cache": None,  # split by its sub-folders below
    "uploads": "uploads",
    "datasets": "datasets",
    "tensorboard": "tensorboard",
    "exports": "exports",
    "tasks": "other",
    "tune": "searches",  # Optuna's study journals (`tune`)
    "mlruns": "mlflow",
    "mlflow": "mlflow",
    "mlartifacts": "mlflow",
}
CACHE_KINDS = {"data": "data caches", "features": "feature caches", "teacher_logits": "teacher caches"}
KINDS = ("runs", "data caches", "feature caches", "teacher caches", "uploads", "datasets", "tensorboard",
         "exports", "mlflow", "searches", "store", "other")
# What new_run_id() makes: a folder so named is a run's even when it holds nothing we know yet.
_RUN_ID_SHAPE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


def tree_size(path: Path) -> tuple[int, int, float]:
    """(bytes, files, newest mtime) of a file or folder, by stat only; links not followed."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return 0, 0, 0.0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_size, 1, st.st_mtime
    total, files, newest = 0, 0, 0.0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            s = e.stat(follow_symlinks=False)
                            total, files, newest = total + s.st_size, files + 1, max(newest, s.st_mtime)
                    except OSError:
                        continue  # deleted while we looked
        except OSError:
            continue
    return total, files, newest


def _entries(home: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(home) as it:
            return list(it)
    except OSError:
        return []


def looks_like_run_folder(path: Path) -> bool:
    """A folder a run wrote: named like a run id, or holding a checkpoint or its settings."""
    if path.name in KIND_OF_FOLDER or not paths.RUN_ID_RE.fullmatch(path.name) or not path.is_dir():
        return False
    return bool(_RUN_ID_SHAPE.fullmatch(path.name) or any(path.glob("*.pt")) or (path / "config.toml").exists())


@dataclass
class Usage:
    home: str
    total: int = 0
    free: int = 0
    kinds: dict[str, dict] = field(default_factory=dict)  # kind -> {bytes, files}
    runs: list[dict] = field(default_factory=list)  # largest first
    caches: list[dict] = field(default_factory=list)  # largest first
    seconds: float = 0.0

    def to_dict(self, top: int = 10) -> dict:
        return {"home": self.home, "total_bytes": self.total, "free_bytes": self.free, "seconds": round(self.seconds, 3),
                "kinds": [{"kind": k, **v} for k, v in self.kinds.items()],
                "largest_runs": self.runs[:top], "largest_caches": self.caches[:top]}


def usage(store=None) -> Usage:
    """The data folder's size by kind, every run folder's size (largest first,
    with its row's status and group) and every cache entry's."""
    t0 = time.perf_counter()
    home = paths.home()
    rows = {r["id"]: r for r in store.query("SELECT id, status, group_id, name FROM runs")} if store else {}
    u = Usage(str(home), kinds={k: {"bytes": 0, "files": 0} for k in KINDS})

    def add(kind: str, size: int, files: int) -> None:
        u.kinds[kind]["bytes"] += size
        u.kinds[kind]["files"] += files
        u.total += size

    for e in _entries(home):
        p = Path(e.path)
        if e.name == "cache" and e.is_dir(follow_symlinks=False):
            for sub in _entries(p):
                kind = CACHE_KINDS.get(sub.name, "other")
                for f in (_entries(Path(sub.path)) if sub.is_dir(follow_symlinks=False) else [sub]):
                    size, files, mtime = tree_size(Path(f.path))
                    add(kind, size, files)
                    if kind != "other" and f.is_file(follow_symlinks=False):
                        u.caches.append({"kind": sub.name, "file": f.name, "bytes": size, "last_used": mtime})
        elif e.name.startswith(DB_NAME):
            add("store", *tree_size(p)[:2])
        elif e.name.startswith("mlflow.db"):  # MLflow's default tracking store (export-mlflow)
            add("mlflow", *tree_size(p)[:2])
        elif e.is_dir(follow_symlinks=False) and e.name in KIND_OF_FOLDER:
            add(KIND_OF_FOLDER[e.name], *tree_size(p)[:2])
        elif e.is_dir(follow_symlinks=False) and (e.name in rows or looks_like_run_folder(p)):
            size, files, _ = tree_size(p)
            add("runs", size, files)
            r = rows.get(e.name)
            u.runs.append({"run_id": e.name, "bytes": size, "status": r["status"] if r else "no row (orphan)",
                           "group_id": r["group_id"] if r else None, "name": r["name"] if r else "",
                           "slimmed": slimmed_marker(p).exists()})
        else:
            add("other", *tree_size(p)[:2])
    u.runs.sort(key=lambda r: -r["bytes"])
    u.caches.sort(key=lambda c: -c["bytes"])
    try:
        u.free = shutil.disk_usage(home).free
    except OSError:
        u.free = 0
    u.seconds = time.perf_counter() - t0
    return u


def slimmed_marker(run_folder: Path) -> Path:
    """Written beside a checkpoint whose optimizer state was dropped (`slim`)."""
    return run_folder / "SLIMMED"


def run_bytes(run_id: str) -> int:
    """A run's folder plus its TensorBoard files: what deleting it frees."""
    return tree_size(paths.run_dir(run_id))[0] + tree_size(paths.home() / "tensorboard" / run_id)[0]


@dataclass
class DeletePlan:
    runs: list[dict]  # {run_id, name, status, group_id, bytes}
    blocked: list[dict]  # runs still queued or running: never deleted

    @property
    def bytes(self) -> int:
        return sum(r["bytes"] for r in self.runs)


def plan_delete(store, run_ids: list[str] = (), group: str | None = None) -> DeletePlan:
    """What deleting these runs (or this group's) would remove, and how much it frees.
    Unknown ids are a StoreError; queued or running runs are listed as blocked."""
    ids = [paths.check_run_id(r) for r in run_ids]
    if group is not None:
        rows = store.query("SELECT id FROM runs WHERE group_id = ? ORDER BY created, id", (paths.check_run_id(group),))
        if not rows:
            raise StoreError(f"No runs in group {group!r}: `python -m core runs` lists the groups (group_id).")
        ids += [r["id"] for r in rows if r["id"] not in ids]
    if not ids:
        raise StoreError("Name the runs to delete (run ids) or a group (--group G).")
    runs, blocked = [], []
    for run_id in ids:
        r = store.run(run_id)
        item = {"run_id": run_id, "name": r["name"], "status": r["status"], "group_id": r["group_id"],
                "bytes": run_bytes(run_id)}
        (runs if r["status"] in TERMINAL else blocked).append(item)
    return DeletePlan(runs, blocked)


def delete(store, plan: DeletePlan) -> int:
    """Delete the plan's runs (rows, run folders, TensorBoard files); returns the
    bytes freed. A plan with a queued or running run deletes nothing."""
    if plan.blocked:
        names = ", ".join(f"{b['run_id']} ({b['status']})" for b in plan.blocked)
        raise StoreError(f"Not deleting anything: {names} still {'runs' if len(plan.blocked) == 1 else 'run'}. "
                         "Cancel (`python -m core cancel ID`) or wait for it, then delete again.")
    freed = 0
    for item in plan.runs:
        before = run_bytes(item["run_id"])
        store.delete_run(item["run_id"])  # refuses, in its transaction, a run that started meanwhile
        shutil.rmtree(paths.home() / "tensorboard" / item["run_id"], ignore_errors=True)
        freed += before - run_bytes(item["run_id"])
    return freed


@dataclass
class Orphans:
    folders: list[dict]  # {run_id, bytes}: a run folder no row names
    rows: list[dict]  # {run_id, status, epochs_done}: an ended run that trained but whose folder is gone

    def to_dict(self) -> dict:
        return {"folders": self.folders, "rows": self.rows}


def orphans(store) -> Orphans:
    rows = {r["id"]: r for r in store.query("SELECT id, status, epochs_done FROM runs")}
    folders = [{"run_id": e.name, "bytes": tree_size(Path(e.path))[0]} for e in _entries(paths.home())
               if e.name not in rows and looks_like_run_folder(Path(e.path))]
    lost = [{"run_id": i, "status": r["status"], "epochs_done": r["epochs_done"]} for i, r in rows.items()
            if r["status"] in TERMINAL and r["epochs_done"] and not paths.run_dir(i).exists()]
    return Orphans(sorted(folders, key=lambda f: f["run_id"]), sorted(lost, key=lambda r: r["run_id"]))


def remove_orphans(store, found: Orphans) -> int:
    """Remove what `orphans` found (checked again: a row may have appeared since). Returns bytes freed."""
    now = orphans(store)
    folders = {f["run_id"] for f in now.folders} & {f["run_id"] for f in found.folders}
    rows = {r["run_id"] for r in now.rows} & {r["run_id"] for r in found.rows}
    freed = 0
    for run_id in sorted(folders):
        freed += tree_size(paths.run_dir(run_id))[0]
        shutil.rmtree(paths.run_dir(run_id), ignore_errors=True)
    for run_id in sorted(rows):
        store.delete_run(run_id)
    return freed


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


def slim(store, run_ids: list[str]) -> list[dict]:
    """Drop the optimizer state from ended runs' checkpoints, keeping the weights
    (they still predict, evaluate and export; they can no longer resume).
    Returns {run_id, before, after} per run that had something to drop."""
    import torch

    from core.train.checkpoint import check_whole, save_atomic

    done = []
    for run_id in run_ids:
        r = store.run(paths.check_run_id(run_id))
        if r["status"] not in TERMINAL:
            raise StoreError(f"Run {run_id} is {r['status']}: only ended runs are slimmed.")
        folder = paths.run_dir(run_id)
        before = after = 0
        for ckpt in sorted(folder.glob("*.pt")):
            check_whole(ckpt)  # a damaged file is reported, not rewritten
            obj = torch.load(ckpt, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or "optimizer" not in obj:
                continue
            size = ckpt.stat().st_size
            obj.pop("optimizer")
            obj["slimmed"] = True
            save_atomic(obj, ckpt)
            before, after = before + size, after + ckpt.stat().st_size
            slimmed_marker(folder).write_text("optimizer state dropped by `python -m core slim`: this run can't resume\n")
        if before:
            done.append({"run_id": run_id, "before": before, "after": after})
    return done
