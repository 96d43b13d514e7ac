"""The data folder's upkeep from a terminal: `du`, `delete`, `check`, `slim`,
`backup`, `restore`."""

from __future__ import annotations

import datetime
import json

from core.cli.output import print_table
from core.errors import TLabError


def _human(n) -> str:
    from core.runs.storage import human

    return human(n)


def cmd_du(args) -> int:
    from core.runs import storage
    from core.runs.store import Store

    u = storage.usage(Store()).to_dict(top=args.top)
    if args.json:
        print(json.dumps(u, indent=2))
        return 0
    print(f"data folder {u['home']}: {_human(u['total_bytes'])} ({_human(u['free_bytes'])} free on its disk; "
          f"measured in {u['seconds']:.2f} s)")
    print_table([{"kind": k["kind"], "size": _human(k["bytes"]), "files": k["files"]} for k in u["kinds"] if k["files"]],
                ["kind", "size", "files"])
    if u["largest_runs"]:
        print("\nlargest runs")
        print_table([{**r, "size": _human(r["bytes"]), "slimmed": "yes" if r["slimmed"] else ""}
                     for r in u["largest_runs"]], ["run_id", "size", "status", "group_id", "slimmed"])
    if u["largest_caches"]:
        print("\nlargest cache entries")
        print_table([{**c, "size": _human(c["bytes"]),
                      "last used": datetime.datetime.fromtimestamp(c["last_used"]).strftime("%Y-%m-%d %H:%M")}
                     for c in u["largest_caches"]], ["kind", "file", "size", "last used"])
    return 0


def cmd_delete(args) -> int:
    from core.runs import storage
    from core.runs.store import Store

    store = Store()
    plan = storage.plan_delete(store, args.run_ids, args.group)
    what = {"runs": plan.runs, "bytes": plan.bytes}
    if plan.blocked or args.dry_run:
        if plan.blocked:
            storage.delete(store, plan)  # raises, naming the runs that still run: nothing is deleted
        if args.json:
            print(json.dumps({**what, "deleted": False}, indent=2))
        else:
            print_table([{**r, "size": _human(r["bytes"])} for r in plan.runs], ["run_id", "status", "group_id", "size"])
            print(f"would free {_human(plan.bytes)}")
        return 0
    freed = storage.delete(store, plan)
    if args.json:
        print(json.dumps({**what, "deleted": True, "freed_bytes": freed}, indent=2))
    else:
        print(f"deleted {len(plan.runs)} run(s): {', '.join(r['run_id'] for r in plan.runs)}; freed {_human(freed)}")
    return 0


def cmd_check(args) -> int:
    from core.runs import integrity, storage
    from core.runs.store import Store

    store = Store()
    found = storage.orphans(store)
    out = {"orphans": found.to_dict()}
    if not args.orphans:
        out = {**integrity.full_check(store).to_dict(), **out}
    if args.remove_orphans:
        out["orphans_removed_bytes"] = storage.remove_orphans(store, found)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        if "ok" in out:
            print(f"store: {'ok' if out['store'] == 'ok' else 'damaged'}; "
                  f"{out['checkpoints_checked']} checkpoint(s) and {out['caches_checked']} cache entries checked "
                  f"in {out['seconds']:.2f} s")
            for d in out["damaged"]:
                print(f"damaged {d['kind']}: {d['path']} ({d['problem']}). Lost: {d['lost']}. Still works: {d['works']}.")
        for f in found.folders:
            print(f"orphan folder (no run in the store): {f['run_id']} ({_human(f['bytes'])})")
        for r in found.rows:
            print(f"orphan row (its run folder is gone): {r['run_id']} ({r['status']}, {r['epochs_done']} epoch(s))")
        if found.folders or found.rows:
            print(f"removed them, freed {_human(out['orphans_removed_bytes'])}" if args.remove_orphans
                  else "remove them with `python -m core check --orphans --remove-orphans`")
        elif args.orphans:
            print("no orphans")
    damaged = bool(out.get("damaged"))
    return 1 if damaged or ((found.folders or found.rows) and not args.remove_orphans) else 0


def cmd_slim(args) -> int:
    from core.runs import storage
    from core.runs.schema import TERMINAL
    from core.runs.store import Store

    store = Store()
    ids = list(args.run_ids)
    if args.ended:
        ids += [r["id"] for r in store.query(f"SELECT id FROM runs WHERE status IN ({','.join('?' * len(TERMINAL))})",
                                             TERMINAL) if r["id"] not in ids]
    if not ids:
        raise TLabError("Name the runs to slim (run ids), or --ended for every ended run.")
    done = storage.slim(store, ids)
    saved = sum(d["before"] - d["after"] for d in done)
    if args.json:
        print(json.dumps({"slimmed": done, "freed_bytes": saved}, indent=2))
    else:
        for d in done:
            print(f"{d['run_id']}: {_human(d['before'])} -> {_human(d['after'])} (can no longer resume)")
        print(f"slimmed {len(done)} run(s), freed {_human(saved)}")
    return 0


def cmd_backup(args) -> int:
    from core.runs import backup
    from core.runs.store import Store

    done = backup.backup(Store(), args.out)
    print(json.dumps(done, indent=2) if args.json else
          f"backed up {done['runs']} run(s), {done['files']} file(s), {_human(done['bytes'])} to {done['file']} "
          f"in {done['seconds']:.1f} s")
    return 0


def cmd_restore(args) -> int:
    from core.runs import backup

    done = backup.restore(args.file)
    if args.json:
        print(json.dumps(done, indent=2))
    else:
        print(f"restored {done['runs']} run(s), {done['files']} file(s) into {done['home']}"
              + (f"; {done['interrupted']} run(s) that were queued or running are interrupted: resume them"
                 if done["interrupted"] else ""))
    return 0


def register(sub) -> None:
    sp = sub.add_parser("du", help="the data folder's size by kind, the largest runs and cache entries")
    sp.add_argument("--top", type=int, default=10, help="how many of the largest runs and caches to list")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_du)
    sp = sub.add_parser("delete", help="delete ended runs, or a whole group, with their folders")
    sp.add_argument("run_ids", nargs="*", metavar="RUN")
    sp.add_argument("--group", default=None, help="every run of this group (see group_id in `runs`)")
    sp.add_argument("--dry-run", action="store_true", help="list what would go and the space it frees; delete nothing")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_delete)
    sp = sub.add_parser("check", help="check the store, every checkpoint and cache entry; find orphans")
    sp.add_argument("--orphans", action="store_true", help="only look for orphans (fast)")
    sp.add_argument("--remove-orphans", action="store_true", help="remove the orphans found")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_check)
    sp = sub.add_parser("slim", help="drop the optimizer state of ended runs' checkpoints (they can't resume then)")
    sp.add_argument("run_ids", nargs="*", metavar="RUN")
    sp.add_argument("--ended", action="store_true", help="every ended run")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_slim)
    sp = sub.add_parser("backup", help="the store (consistent while runs write) and run folders, as one ZIP")
    sp.add_argument("--out", required=True, help="the ZIP to write (outside the data folder)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_backup)
    sp = sub.add_parser("restore", help="bring a backup back into an empty data folder")
    sp.add_argument("file")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_restore)
