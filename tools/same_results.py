"""The same-results check: fixed seeds, CPU, tiny settings, every kind of run through the CLI
(`python -m core`) in a fresh data folder, then one JSON of every run's final metrics. Run it at two
commits and diff the outputs: a refactoring that changes no behaviour prints the same JSON.

    python tools/same_results.py [--repo DIR] [--out FILE]   # --repo: the checkout whose CLI runs

What it runs (digits, 1 epoch, 32 px unless said; one torch thread, so the sums add up in one order):
- demo: the Experiment page's default demo, EfficientNet-Lite0 (its ImageNet weights ship offline)
  fully fine-tuned, and its scratch twin, 10 labels per class (`train`, in the foreground);
- race: Lite0 under feature extraction and partial fine-tuning (`race`: the queue and worker processes);
- sweep: scratch small_cnn at 5 and 10 labels per class, 20 steps each (`sweep-labels`);
- distill: a small_cnn student of the demo's transfer run, with the teacher and alone (`distill`);
- ddp: small_cnn from scratch at 16 px over 2 processes (`train --processes 2`: torchrun, gloo).

The metrics come from the run store (`tlab.sqlite`, whose format is part of the promise): per run its
status, test accuracy and loss, best validation accuracy, per-epoch train/val loss and accuracy, and
the last logged step's loss. Runs are named by what they are (kind, backbone, strategy, labels, seed,
teacher, processes), not by their ids, which differ on every launch. Wall-clock figures are left out.
About 2-3 minutes on 2 busy cores.

Torch runs on one thread everywhere (OMP_NUM_THREADS=1): a different thread count sums in another
order and changes the last digits. Workers before commit 3a18b09 ignored OMP_NUM_THREADS and took
one thread per core, so compare with those commits under `--cpus 1` (one core: one thread there too).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits", "--device", "cpu", "--seed", "0", "--no-progress"]


CPUS: set[int] | None = None  # --cpus: the CPUs every process of the check may run on


def _pin() -> None:
    if CPUS:
        os.sched_setaffinity(0, CPUS)


def cli(repo: Path, home: Path, *args: str) -> str:
    env = {**os.environ, "TLAB_HOME": str(home), "TORCH_HOME": str(home / "torch_home"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(repo), "TLAB_DIST_TIMEOUT": "120"}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "core", *args], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=600, preexec_fn=_pin)
    print(f"  {args[0]}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    if res.returncode != 0:
        raise SystemExit(f"python -m core {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res.stdout


def run_everything(repo: Path, home: Path) -> None:
    demo = json.loads(cli(repo, home, "train", *DIGITS, "--epochs", "1", "--image-size", "32",
                          "--labels-per-class", "10", "--name", "transfer", "--json"))
    cli(repo, home, "train", *DIGITS, "--epochs", "1", "--image-size", "32", "--labels-per-class", "10",
        "--strategy", "scratch", "--name", "scratch twin", "--json")
    cli(repo, home, "race", *DIGITS, "--epochs", "1", "--image-size", "32", "--labels-per-class", "10",
        "--strategies", "feature_extraction,partial", "--json")
    cli(repo, home, "sweep-labels", *DIGITS, "--backbone", "small_cnn", "--image-size", "32",
        "--strategy", "scratch", "--strategies", "scratch", "--labels", "5,10", "--seeds", "1", "--steps", "20", "--json")
    cli(repo, home, "distill", "--teacher", demo["run_id"], "--student", "small_cnn", "--json")
    cli(repo, home, "train", *DIGITS, "--backbone", "small_cnn", "--strategy", "scratch", "--epochs", "1",
        "--image-size", "16", "--labels-per-class", "30", "--processes", "2", "--json")


def metrics(db: Path) -> dict:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    out = {}
    for row in con.execute("SELECT * FROM runs ORDER BY created, id"):
        cfg = json.loads(row["config"])
        key = ":".join([row["kind"] or "train", cfg["backbone"], cfg["strategy"], f"k={cfg['labels_per_class']}",
                        f"seed={cfg['seed']}", f"steps={cfg.get('steps')}", f"teacher={bool(cfg.get('teacher'))}",
                        f"processes={cfg.get('processes', 1)}"])
        n, base = 2, key
        while key in out:
            key, n = f"{base}#{n}", n + 1
        result = json.loads(row["result"]) if row["result"] else {}
        epochs = con.execute("SELECT epoch, train_loss, train_accuracy, val_loss, val_accuracy FROM epoch_metrics "
                             "WHERE run_id = ? ORDER BY epoch", (row["id"],)).fetchall()
        last = con.execute("SELECT step, loss FROM step_metrics WHERE run_id = ? ORDER BY step DESC LIMIT 1",
                           (row["id"],)).fetchone()
        out[key] = {
            "name": row["name"], "status": row["status"], "world_size": row["world_size"],
            "test_accuracy": row["test_accuracy"], "test_loss": result.get("test_loss"),
            "best_val_accuracy": row["best_val_accuracy"],
            "epochs": [dict(e) for e in epochs],
            "last_step": dict(last) if last else None,
        }
    con.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose `python -m core` runs (default: this one)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--cpus", type=int, help="run everything on this many CPUs (e.g. 1 to compare with commits "
                                            "before 3a18b09, whose workers used one torch thread per core "
                                            "whatever OMP_NUM_THREADS said)")
    args = p.parse_args()
    global CPUS
    CPUS = set(sorted(os.sched_getaffinity(0))[: args.cpus]) if args.cpus else None
    repo = args.repo.resolve()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="same_results_") as tmp:
        home = Path(tmp) / "tlab"
        print(f"same results: {repo} at {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=repo, capture_output=True, text=True).stdout.strip()}",
              file=sys.stderr)
        run_everything(repo, home)
        text = json.dumps(metrics(home / "tlab.sqlite"), indent=1, sort_keys=True)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"{time.monotonic() - t0:.0f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
