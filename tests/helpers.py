"""Helpers the test modules import (`from helpers import ...`): a module of its
own, since two conftest.py files (tests/ and tests/e2e/) share one module name."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NONET = Path(__file__).resolve().parent / "nonet"


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m core ARGS` in a subprocess with the network blocked."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(NONET), str(ROOT)])
    # One torch thread, as in the test process: on tiny inputs a second thread costs more than it gives,
    # and on a busy 2-core machine two threads made a feature pass 4x slower (20.8 s vs 5.4 s).
    full_env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout: float = 120.0, every: float = 0.2):
    """Poll until `predicate()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def digits_folder(path: Path, per_class: int = 8) -> str:
    """The first `per_class` of scikit-learn's digits of each class as a folder
    of class folders (8x8 greyscale PNGs), and its `folder:` dataset name: the
    real digits, small enough that a run's validation and test passes are a
    few images, not 540."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(10):
        (path / str(c)).mkdir(parents=True, exist_ok=True)
        for i, k in enumerate(np.flatnonzero(d.target == c)[:per_class]):
            Image.fromarray((d.images[k] * 255 / 16).astype(np.uint8)).save(path / str(c) / f"{i:02d}.png")
    return f"folder:{path}"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(side: int = 50_000) -> bytes:
    """A 100-byte PNG whose header claims side x side pixels (2.5 billion by default)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def fake_hf_cache(root: Path, names: list[str], seed: int = 0) -> dict[str, dict]:
    """Pretrained weights for `timm:` backbones, written where timm and huggingface_hub read them
    (HF_HOME=root): hub/models--timm--<model.tag>/refs/main naming a revision, and
    snapshots/<revision>/model.safetensors holding the model's state dict at its own input size,
    ImageNet head included. Seeded random values: real enough to load, never the network.
    Returns {name: state dict written}."""
    import timm
    import torch
    from safetensors.torch import save_file

    written = {}
    for name in names:
        full = name.removeprefix("timm:")
        repo = timm.models.get_pretrained_cfg(full).hf_hub_id
        folder = root / "hub" / f"models--{repo.replace('/', '--')}"
        revision = "0123456789abcdef0123456789abcdef01234567"
        torch.manual_seed(seed)
        state = {k: v.contiguous() for k, v in timm.create_model(full, pretrained=False).state_dict().items()}
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(revision)
        (folder / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
        save_file(state, str(folder / "snapshots" / revision / "model.safetensors"))
        written[name] = state
    return written


def image_folder(path: Path, counts: dict[str, int], size: int = 16, seed: int = 0, signal: float = 0.0) -> str:
    """A folder of class folders of random-noise PNGs, `counts` images per
    class, and its `folder:` dataset name. With `signal` 0 the labels carry no
    information (a model can only memorise them); above 0, class k's images
    are brighter by k * signal on average (learnable, overlapping)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(counts.items()):
        (path / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.normal(0.5 + (k - (len(counts) - 1) / 2) * signal, 0.2, (size, size, 3))
            Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(path / name / f"{i:03d}.png")
    return f"folder:{path}"


def _photo(args: tuple) -> None:
    """One photo-like JPEG (smooth colours, texture, a shape in its class's colour)."""
    import numpy as np
    from PIL import Image, ImageDraw

    path, index, label, size = args
    rng = np.random.default_rng(index)
    w, h = size
    grid = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    im = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
    texture = Image.fromarray(rng.integers(0, 40, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    im = Image.fromarray(np.minimum(255, np.asarray(im, np.uint16) + np.asarray(texture)).astype(np.uint8))
    colour = ((label * 97) % 256, (label * 53) % 256, (label * 151) % 256)
    r = int(min(w, h) * rng.uniform(0.15, 0.3))
    x, y = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    draw = ImageDraw.Draw(im)
    (draw.ellipse if label % 2 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
    im.save(path, quality=85)


def photos_folder(root: Path, n: int, classes: int = 10, large_every: int = 2, corrupt: int = 3,
                  processes: int = 1, distinct: int | None = None) -> Path:
    """A folder like a person's photos: `classes` class folders holding `n`
    JPEGs in all, every `large_every`-th 1024x768 and the others 256x256
    (large_every=1: all large), plus `corrupt` broken files (named Broken_*.jpg, listed first).
    With `distinct`, only that many pictures are drawn and the other files are
    copies of them (each still decoded on its own): quick to make by the thousand."""
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    jobs = [(root / f"class_{i % classes}" / f"IMG_{i:05d}.jpg", i, i % classes,
             (1024, 768) if i % large_every == 0 else (256, 256)) for i in range(n)]
    drawn = jobs[: distinct or n]
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_photo, drawn, chunksize=16))
    else:
        for job in drawn:
            _photo(job)
    for i, job in enumerate(jobs[len(drawn):], len(drawn)):
        source = drawn[i % len(drawn)]
        if source[3] != job[3]:  # the same size as the file it stands for
            source = next((d for d in drawn if d[3] == job[3]), source)
        job[0].write_bytes(source[0].read_bytes())
    for k in range(corrupt):
        good = jobs[k][0].read_bytes()
        # cut short, not an image at all, empty: what a failed copy or a stray file leaves
        (root / f"class_{k % classes}" / f"Broken_{k}.jpg").write_bytes(
            [good[: len(good) // 3], b"not a picture", b""][k % 3])
    return root


def recorded_study(name: str) -> dict:
    """A study of four trials in the data folder's journal (one pruned after its first epoch),
    each trial a run of the store's group tune-NAME with its epochs, as a search leaves them, in the
    data folder $TLAB_HOME names (no training: for tests whose claim is how a study is shown)."""
    import optuna
    from optuna.distributions import FloatDistribution

    from core.runs import tune
    from core.runs.store import Store
    from core.train.config import RunConfig

    tiny = dict(backbone="small_cnn", dataset="digits", image_size=16, labels_per_class=10, device="cpu", epochs=3)

    study = optuna.create_study(study_name=name, storage=tune._storage(name, None), direction="maximize")
    s = Store()
    runs = {}
    for n, (lr, curve, status) in enumerate([(0.001, [0.5, 0.7, 0.8], "finished"), (0.01, [0.6, 0.85, 0.9], "finished"),
                                            (0.0001, [0.1], "pruned"), (0.003, [0.55, 0.75, 0.82], "finished")]):
        cfg = RunConfig(**{**tiny, "strategy": "scratch", "lr": lr, "name": f"trial {n} · scratch"})
        run_id = s.add_run(cfg.to_json(), cfg.name, tune.group_id(name), status, kind=tune.KIND)
        for e, v in enumerate(curve, 1):
            s.conn.execute("INSERT INTO epoch_metrics (run_id, epoch, val_accuracy, train_loss, seconds, t) "
                           "VALUES (?,?,?,?,?,?)", (run_id, e, v, 1.0 / e, 1.0, float(e)))
        s.set_status(run_id, status, best_val_accuracy=max(curve), epochs_done=len(curve))
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions={"lr": FloatDistribution(1e-5, 1e-1, log=True)},
            value=None if status == "pruned" else max(curve),
            state=optuna.trial.TrialState.PRUNED if status == "pruned" else optuna.trial.TrialState.COMPLETE,
            intermediate_values=dict(enumerate(curve, 1)), user_attrs={"run_id": run_id}))
        runs[n] = run_id
    return runs
