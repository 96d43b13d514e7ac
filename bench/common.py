"""What the benchmarks share: command-line options, the machine's name, a
clock on the engine's step events, a hand-written reference loop, and one
way to print (and append to a results file) a ratio against its target.

Every figure a benchmark reports is a ratio of two things measured in the
same run on the same machine; absolute times are printed for orientation.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def options(description: str, default_device: str = "cpu") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default=default_device, choices=("cpu", "cuda"), help="where to train")
    p.add_argument("--quick", action="store_true", help="a few steps only: checks that it runs, figures are rough")
    p.add_argument("--out", default=None, help="also append the figures (markdown) to this file")
    p.add_argument("--repeats", type=int, default=None, help="alternating measurements of each side (median kept)")
    return p


def fresh_home(prefix: str = "tlab-bench-") -> Path:
    """A private data folder for this benchmark (its caches start empty)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["TLAB_HOME"] = str(home)
    return home


def machine(device: str = "cpu") -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    text = f"{cpu}, {cores} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device == "cuda" and torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(0)} ({text})"
    return text


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


class StepClock:
    """An engine listener: the time each Step event arrives. On CUDA the
    engine reads the loss (a sync) only when it emits a Step, so the time of
    a Step is the time the GPU finished that step."""

    def __init__(self):
        self.times: dict[int, float] = {}
        self.batch = None

    def __call__(self, event) -> None:
        from core.train import events

        if isinstance(event, events.Step):
            self.times[event.step] = time.perf_counter()
        elif isinstance(event, events.RunStart):
            self.batch = event.config.batch_size

    def images_per_second(self, first: int, last: int) -> float:
        """Throughput over steps first+1 .. last (both must have been logged)."""
        return (last - first) * self.batch / (self.times[last] - self.times[first])


def engine_throughput(cfg, warmup: int, measured: int) -> float:
    """Images/s of the engine over `measured` steps after `warmup` steps."""
    from core.train import engine

    clock = StepClock()
    cfg = cfg.replace(steps=warmup + measured, epochs=1)
    result = engine.train(cfg, run_dir=Path(tempfile.mkdtemp()), listeners=(clock,))
    assert result.status == "finished", result.reason
    return clock.images_per_second(warmup, warmup + measured)


def reference_loop(cfg, warmup: int, measured: int, fixed_batch: bool = False, compile: bool = False) -> float:
    """A minimal hand-written PyTorch loop with what the engine uses: the same
    model, optimizer and learning rates, data (uint8, on the device), batch,
    normalisation, precision (bf16 autocast on CUDA) and memory format.
    `fixed_batch`: one batch, already prepared on the device, every step (the
    compute ceiling: no data work at all)."""
    import torch
    import torch.nn.functional as F

    from core.train import backbones, data, strategies

    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    spec = backbones.get(cfg.backbone)
    bundle = data.load(cfg.dataset, cfg.image_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = backbones.create_model(spec, bundle.num_classes, cfg.image_size, strategies.get(cfg.strategy).pretrained, cfg.weights)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    plan = strategies.make_plan(spec, model, cfg, 0)
    optimizer = strategies.build_optimizer(spec, model, plan, cfg.weight_decay)
    strategies.set_train_mode(spec, model, plan)
    x, y = bundle.train.x.to(device), bundle.train.y.to(device)
    fwd = torch.compile(model) if compile else model
    bs = cfg.batch_size
    g = torch.Generator(device=device).manual_seed(0)

    def batch():
        idx = torch.randint(len(y), (bs,), device=device, generator=g)
        xb = data.to_input(x[idx], spec.mean, spec.std)
        return (xb.contiguous(memory_format=torch.channels_last) if cuda else xb), y[idx]

    fixed = batch() if fixed_batch else None

    def step():
        xb, yb = fixed if fixed is not None else batch()
        with (torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)):
            loss = F.cross_entropy(fwd(xb).float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync(cfg.device)
    t0 = time.perf_counter()
    for _ in range(measured):
        step()
    sync(cfg.device)
    return measured * bs / (time.perf_counter() - t0)


def alternate(a, b, repeats: int) -> tuple[float, float]:
    """Measure a() and b() in turns, `repeats` times each; medians. Taking
    turns spreads the noise of a shared machine over both sides."""
    ra, rb = [], []
    for _ in range(repeats):
        ra.append(a())
        rb.append(b())
    return statistics.median(ra), statistics.median(rb)


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "meets the target" if ok else "MISSES the target"


def report(args, title: str, lines: list[str]) -> None:
    """Print the figures; with --out, append them to that file as markdown."""
    print(f"== {title}")
    for line in lines:
        print("  " + line)
    if getattr(args, "out", None):
        with open(args.out, "a") as f:
            f.write(f"\n### {title}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")


def weights_for(backbone: str, image_size: int, home: Path) -> str | None:
    """None when the backbone's ImageNet weights are here; else a file of
    random weights, so that transfer strategies run on a bare GPU box (they
    cost the same whatever the weights hold)."""
    import torch

    from core.train import backbones, weights

    spec = backbones.get(backbone)
    if weights.availability(spec) in ("bundled", "cached"):
        return None
    path = home / f"random_{backbone}.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(backbones.create_model(spec, 10, image_size, False, None).state_dict(), path)
    return str(path)
