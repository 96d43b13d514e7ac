"""The Storage page's questions and actions, the same as `du`, `delete` and
`check --orphans` on the CLI: what the data folder holds, what deleting some
runs or a group would free (and does free), orphans and their removal."""

from __future__ import annotations

from core.runs import storage
from core.runs.storage import DeletePlan, Orphans, human  # noqa: F401  (re-exported for pages)


def usage(store, top: int = 10) -> dict:
    return storage.usage(store).to_dict(top=top)


def groups(store) -> list[dict]:
    """Every group with its run count and size on disk, largest first (runs still going marked busy)."""
    out: dict[str, dict] = {}
    for r in store.query("SELECT id, group_id, name, status FROM runs ORDER BY created, id"):
        g = out.setdefault(r["group_id"], {"group_id": r["group_id"], "runs": 0, "bytes": 0, "busy": 0, "names": []})
        g["runs"] += 1
        g["bytes"] += storage.run_bytes(r["id"])
        g["busy"] += r["status"] in ("queued", "running")
        g["names"].append(r["name"] or r["id"])
    return sorted(out.values(), key=lambda g: -g["bytes"])


def plan_delete(store, run_ids=(), group: str | None = None) -> DeletePlan:
    return storage.plan_delete(store, list(run_ids), group)


def delete(store, run_ids=(), group: str | None = None) -> tuple[DeletePlan, int]:
    """Plan again (a run may have started since the page asked) and delete; (plan, bytes freed)."""
    plan = storage.plan_delete(store, list(run_ids), group)
    return plan, storage.delete(store, plan)


def orphans(store) -> Orphans:
    return storage.orphans(store)


def remove_orphans(store, found: Orphans) -> int:
    return storage.remove_orphans(store, found)
