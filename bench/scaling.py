"""One run over 1 and N processes (torchrun + DDP): training images/s and the
scaling efficiency, images/s with N / (N x images/s with 1), measured in one go.

    python bench/scaling.py [--processes 2] [--device cpu] [--backbone small_cnn --strategy scratch]

Every run is the real CLI under torchrun (`-m core train --json`), same
settings and global batch; images/s is the training loop's, over all
processes, without start-up and evaluation. On a CPU each process gets
`--threads` threads (default: the cores split over N), so the 1-process
reference has the same per-process share; a second reference, one process
using every core, says whether splitting a CPU into processes pays at all.
On GPUs (`--device cuda`) each process has its own GPU and threads don't matter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def train(nproc: int, threads: int, args) -> dict:
    home = tempfile.mkdtemp(prefix="tlab-scaling-")
    env = {**os.environ, "TLAB_HOME": home, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "core", "train", "--backbone", args.backbone, "--strategy", args.strategy, "--dataset", args.dataset,
           "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--device", args.device, "--seed", str(args.seed), "--no-progress", "--json"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{nproc} process(es) failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout)
    assert out["status"] == "finished" and out["world_size"] == nproc, out
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--strategy", default="scratch")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64, help="the global batch, the same for every process count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="threads per process (default: cores / processes)")
    a = p.parse_args()
    n = a.processes
    threads = a.threads or max(1, cores() // n)
    one = train(1, threads, a)
    many = train(n, threads, a)
    rows = [(f"1 process x {threads} thread(s)", one), (f"{n} processes x {threads} thread(s)", many)]
    all_cores = None
    if a.device == "cpu" and threads * n <= cores() and threads < cores():
        all_cores = train(1, cores(), a)
        rows.append((f"1 process x {cores()} threads (all cores)", all_cores))
    print(f"{a.backbone} / {a.strategy} on {a.dataset}, {a.image_size} px, global batch {a.batch_size}, "
          f"{a.epochs} epochs, {a.device}, {cores()} cores")
    print(f"{'setup':<36} {'images/s':>9} {'wall s':>7} {'test acc':>8}")
    for name, r in rows:
        print(f"{name:<36} {r['images_per_second']:9.1f} {r['seconds']:7.1f} {r['test_accuracy']:8.4f}")
    eff = many["images_per_second"] / (n * one["images_per_second"])
    print(f"scaling efficiency, {n} processes vs 1 (same threads each): {eff:.3f}")
    if all_cores:
        print(f"{n} processes vs 1 process on all cores: {many['images_per_second'] / all_cores['images_per_second']:.3f}")


if __name__ == "__main__":
    main()
