"""`allow`: the folders `folder:PATH` datasets may read, recorded in the data
folder's settings file. Only this command adds one, never the web page: a
browser can't widen what the app reads."""

from __future__ import annotations

import json
from pathlib import Path

from core import limits, paths
from core.errors import ConfigError


def cmd_allow(args) -> int:
    recorded = [p.expanduser().resolve() for p in paths.recorded_roots()]
    if args.remove:
        target = Path(args.remove).expanduser().resolve()
        if target not in recorded:
            raise ConfigError(f"{target} is not among the folders `python -m core allow` recorded: "
                              "`python -m core allow --list` shows them.")
        paths.write_recorded_roots([r for r in recorded if r != target])
        print(json.dumps({"removed": str(target)}) if args.json else f"no longer allowed: {target}")
        return 0
    if args.path:
        target = Path(args.path).expanduser().resolve()
        if not target.is_dir():
            raise ConfigError(f"{args.path} is not a folder on this machine: give the folder that holds your class "
                              "folders (or your ZIP files).")
        if target not in recorded:
            paths.write_recorded_roots([*recorded, target])
        if args.json:
            print(json.dumps({"allowed": str(target), "settings": str(paths.settings_path())}))
        else:
            print(f"allowed: {target} (recorded in {paths.settings_path()}; the app reads it at its next use)")
        if not args.list:
            return 0
    rows = [{"folder": str(paths.home().expanduser().resolve()), "from": "the data folder"}]
    env = [Path(r.strip()).expanduser().resolve() for r in limits.folder_roots_setting()]
    rows += [{"folder": str(r), "from": limits.FOLDER_ROOTS_ENV} for r in env]
    rows += [{"folder": str(r), "from": "python -m core allow"} for r in recorded]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['folder']}  ({r['from']})")
    return 0


def register(sub) -> None:
    sp = sub.add_parser("allow", help="allow the app to read images under a folder (folder:PATH datasets)",
                        description="Record a folder whose images `folder:PATH` datasets (the Experiment page's "
                                    "'a folder on this machine') may read, in the data folder's settings.toml. "
                                    "The app reads it at each use: no restart.")
    sp.add_argument("path", nargs="?", default=None, help="the folder to allow (it and everything under it)")
    sp.add_argument("--list", action="store_true", help="list the allowed folders and where each comes from")
    sp.add_argument("--remove", default=None, metavar="PATH", help="stop allowing a folder this command recorded")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_allow)
