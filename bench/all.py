"""Every CPU benchmark, one after the other (`make bench`), then one table of
every row that has a target: its figure, the target and the verdict, with the
machine, the date and the load average before and after (the machine may be
shared: the ratios inside one script's run are what count).

    python bench/all.py                     # all of them (about 10-15 minutes on 2 idle cores)
    python bench/all.py overhead ui         # some of them
    python bench/all.py --out FILE.md       # also append the table to a file

Each script prints its own figures as it goes; a row is any line of its output
that names a target ("target" and "meets"/"MISSES").
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

import common
from common import ROOT, machine

# (name, arguments): the CPU rows of the targets. A script that is not there is skipped.
BENCHES = (
    ("store_overhead", ()),
    ("side_by_side", ()),
    ("scaling", ()),
    ("overhead", ()),
    ("feature_cache", ()),
    ("precision", ()),
    ("folder", ()),  # its CPU rows: folder decode, preview
    ("demo", ()),
    ("ui", ()),
    ("peers", ()),
)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def rows(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()
            if "target" in line and ("meets" in line or "MISSES" in line)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="only these benchmarks (default: all)")
    p.add_argument("--out", default=None, help="also append the summary (markdown) to this file")
    args = p.parse_args()
    known = dict(BENCHES)
    unknown = [n for n in args.names if n not in known]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    chosen = [(n, a) for n, a in BENCHES if not args.names or n in args.names]
    started = datetime.datetime.now(datetime.timezone.utc)
    head = [f"{started:%Y-%m-%d %H:%M} UTC, {machine()}", f"load average (1/5/15 min) at the start: {load()}"]
    table: list[tuple[str, str]] = []
    failed = []
    for name, extra in chosen:
        script = Path(common.__file__).with_name(f"{name}.py")
        if not script.exists():
            continue
        print(f"--- bench/{name}.py {' '.join(extra)} (load {load()})", flush=True)
        proc = subprocess.Popen([sys.executable, str(script), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        out = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            out.append(line)
        if proc.wait() != 0:
            failed.append(name)
            table.append((name, f"FAILED (exit {proc.returncode})"))
        table.extend((name, row) for row in rows("".join(out)))
    head.append(f"load average at the end: {load()}; {(datetime.datetime.now(datetime.timezone.utc) - started).seconds // 60} min")
    print("\n== every CPU row with its target")
    for line in head:
        print("  " + line)
    for name, row in table:
        print(f"  {name:15s} {row}")
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n### make bench\n\n" + "\n".join(f"- {h}" for h in head) + "\n\n| benchmark | row |\n| --- | --- |\n"
                    + "".join(f"| {n} | {r.replace('|', '/')} |\n" for n, r in table))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
