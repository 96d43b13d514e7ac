"""How fast `du` and the store's open-time check are on a big data folder.

Builds, in a temporary data folder, N run folders (a checkpoint, a settings
file, TensorBoard events each), M cache entries and a store with N runs and
their step metrics, then times:

- `core.runs.storage.usage` (stat only) against coreutils `du -sb` over the
  same folder (the reference, in the same run), and against reading every
  file's bytes (what a content-based scan would cost);
- opening the store the first time in a process (with SQLite's quick_check)
  against opening it again (the check is done once per process).

    python bench/storage_upkeep.py [--runs 2000] [--mb 0.5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(home: Path, runs: int, mb: float) -> None:
    from core.runs.store import Store

    store = Store(home / "tlab.sqlite")
    blob = os.urandom(int(mb * 2**20))
    with store.tx() as c:
        for i in range(runs):
            run_id = f"20260101-{i // 10000:06d}-{i % 10000:06x}"
            c.execute("INSERT INTO runs (id, group_id, config, status, created) VALUES (?,?,?,?,?)",
                      (run_id, f"g-{i // 16}", "{}", "finished", time.time()))
            c.executemany("INSERT INTO step_metrics (run_id, step, epoch, loss) VALUES (?,?,?,?)",
                          [(run_id, s, s // 50 + 1, 1.0 / (s + 1)) for s in range(200)])
            folder = home / run_id
            folder.mkdir()
            (folder / "checkpoint.pt").write_bytes(blob)
            (folder / "config.toml").write_text("epochs = 3\n")
            tb = home / "tensorboard" / run_id
            tb.mkdir(parents=True)
            (tb / "events.out.tfevents").write_bytes(blob[:4096])
    for kind in ("data", "features"):
        (home / "cache" / kind).mkdir(parents=True)
        for j in range(runs // 10):
            (home / "cache" / kind / f"{j:032x}.pt").write_bytes(blob[: len(blob) // 4])
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--mb", type=float, default=0.5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "tlab"
        home.mkdir()
        os.environ["TLAB_HOME"] = str(home)
        build(home, a.runs, a.mb)
        from core.runs import integrity, storage
        from core.runs.store import Store

        t = time.perf_counter()
        subprocess.run(["du", "-sb", str(home)], check=True, capture_output=True)
        t_du = time.perf_counter() - t
        integrity.forget(home / "tlab.sqlite")  # build() opened it in this process
        t = time.perf_counter()
        store = Store()
        t_open_first = time.perf_counter() - t
        t = time.perf_counter()
        u = storage.usage(store)
        t_usage = time.perf_counter() - t
        t = time.perf_counter()
        read = sum(len(p.read_bytes()) for p in home.rglob("*") if p.is_file())
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        Store().close()
        t_open_again = time.perf_counter() - t
        integrity._checked.clear()  # another process, within RECHECK_S of the clean check
        t = time.perf_counter()
        Store().close()
        t_open_other = time.perf_counter() - t
        db_mb = (home / "tlab.sqlite").stat().st_size / 2**20
        files = sum(k["files"] for k in u.kinds.values())
        print(f"{a.runs} runs, {files} files, {u.total / 2**30:.2f} GiB (read {read / 2**30:.2f} GiB), store {db_mb:.1f} MB")
        print(f"du (usage, stat only)  {t_usage:7.3f} s   coreutils du -sb {t_du:7.3f} s   ratio {t_usage / t_du:5.2f}")
        print(f"reading every file     {t_read:7.3f} s   ratio usage/read {t_usage / t_read:5.3f}")
        print(f"store open, first      {t_open_first:7.3f} s (quick_check)   again {t_open_again:7.3f} s   "
              f"another process soon after {t_open_other:7.3f} s")


if __name__ == "__main__":
    main()
