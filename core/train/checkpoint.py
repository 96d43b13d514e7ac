"""A run's trained model read back from its checkpoint: built for its
backbone, class count and image size, weights loaded as data only
(`weights_only=True`), eval mode, CPU. The engine writes checkpoints
(`save_atomic`); the insight tools, the lessons and distillation (a teacher)
read them here.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.errors import TLabError
from core.train import backbones
from core.train.backbones import BackboneSpec

CHECKPOINT_NAME = "checkpoint.pt"  # the last epoch's: model, optimizer, plan state; what resume continues from
BEST_NAME = "best.pt"  # the best validation epoch's weights, kept beside the last
CALIBRATION_NAME = "calibration.json"  # the temperature fitted on the validation split
WEIGHTS_CHOICES = ("best", "last")


class CheckpointError(TLabError):
    """A run's checkpoint is missing, unreadable or doesn't fit its backbone."""


class CheckpointWriteError(TLabError):
    pass


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename over the old
    one: a full disk or a read-only folder leaves the previous checkpoint whole."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    need, free = bytes_needed(obj), free_bytes(path.parent)
    if free < need:
        kept = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"not enough free disk space to write the checkpoint {path}: it needs about {need / 2**20:,.1f} MB and "
            f"{free / 2**20:,.1f} MB are free; {kept}. Free disk space (`python -m core du` shows what takes it, "
            "`python -m core delete` and `slim` make room), then resume the run.")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch wraps some write errors in RuntimeError
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        why = getattr(e, "strerror", None) or " ".join(str(e).split())[:200] or type(e).__name__
        kept = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"could not write the checkpoint {path} ({why}): {kept}. Free disk space or make the data folder "
            "writable, then resume the run.") from None


def damage(path: Path) -> str | None:
    """What is wrong with a checkpoint file, or None when it reads whole. Every
    entry of its ZIP is read against the CRC-32 stored with it (torch.load
    itself checks none: a flipped byte in a weight would load silently)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:  # truncated: the ZIP directory is gone
        return f"not a whole checkpoint ({' '.join(str(e).split())[:120] or type(e).__name__})"
    return f"CRC mismatch in {bad}" if bad else None


def check_whole(path: Path) -> None:
    """A CheckpointError naming what is lost when `path` is damaged."""
    problem = damage(path)
    if problem:
        raise CheckpointError(
            f"{path} is not a readable checkpoint: it is damaged ({problem}), the weights it held are lost; the run's metrics and settings "
            "are still in the store. Launch the run again (its config.toml has its settings), or restore a backup.")


# Headroom over the tensors' bytes: the ZIP's records, the pickled structure, the file system.
WRITE_MARGIN = 1 << 20


def bytes_needed(obj) -> int:
    """What writing `obj` with torch.save takes on disk, about: its tensors' bytes plus a margin."""
    total, stack = 0, [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            total += o.nelement() * o.element_size()
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
    return int(total * 1.02) + WRITE_MARGIN


def free_bytes(folder: Path) -> int:
    """Free space where `folder` is (or would be created): its nearest existing parent's file system."""
    import shutil

    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 1 << 62  # can't tell: let the write itself say


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on the CPU
    spec: BackboneSpec
    class_names: list[str]
    image_size: int
    config: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    epoch: int | None = None
    temperature: float = 1.0  # divides the logits for calibrated probabilities (1: none fitted)
    which: str = "last"  # best | last: which of the run's checkpoints this is

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def checkpoint_path(run_dir_or_checkpoint: str | Path, which: str = "last") -> Path:
    """The checkpoint file of a run folder (`which`: the last epoch's, or the
    best validation epoch's when the run kept one), or the file itself."""
    p = Path(run_dir_or_checkpoint).expanduser()
    if not p.is_dir():
        return p
    return p / BEST_NAME if which == "best" and (p / BEST_NAME).exists() else p / CHECKPOINT_NAME


def save_calibration(run_dir: Path, values: dict) -> None:
    tmp = Path(run_dir) / (CALIBRATION_NAME + ".tmp")
    tmp.write_text(json.dumps(values))
    os.replace(tmp, Path(run_dir) / CALIBRATION_NAME)


def load_calibration(run_dir: Path) -> dict:
    """A run's fitted temperature and ECE figures ({} when it has none)."""
    try:
        values = json.loads((Path(run_dir) / CALIBRATION_NAME).read_text())
        return values if isinstance(values, dict) else {}
    except (OSError, ValueError):
        return {}


def default_weights() -> str:
    """Which weights Predict, Inspect, export and distillation load from a run
    folder: $TLAB_WEIGHTS (best | last), else the run's own `use_weights`."""
    choice = os.environ.get("TLAB_WEIGHTS", "").strip().lower()
    if choice and choice not in WEIGHTS_CHOICES:
        raise CheckpointError(f"TLAB_WEIGHTS must be best or last (got {choice!r}).")
    return choice


def load_run_model(run_dir_or_checkpoint: str | Path, which: str | None = None) -> LoadedModel:
    """The model of a run, from its folder or its checkpoint file, ready to
    predict: built for its backbone, class count and image size, weights
    loaded, eval mode, CPU. From a folder, `which` picks the best validation
    epoch's weights or the last epoch's; None follows $TLAB_WEIGHTS, else the
    run's `use_weights` (best by default). Raises CheckpointError with what to do."""
    given = Path(run_dir_or_checkpoint).expanduser()
    if which is not None and which not in WEIGHTS_CHOICES:
        raise CheckpointError(f"weights must be best or last (got {which!r}).")
    explicit = which or default_weights()
    which = explicit or "best"
    path = checkpoint_path(given, which)
    if not path.exists():
        if given.is_dir():
            raise CheckpointError(
                f"Run folder {given} has no {CHECKPOINT_NAME} yet: a run writes one at the end of each epoch, "
                "so wait for its first epoch to finish (or resume it if it was interrupted).")
        raise CheckpointError(
            f"No checkpoint at {path}: the run folder was moved or deleted, or the run never finished an epoch.")
    check_whole(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated, foreign or unsafe files
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {reason}). It may be truncated or "
            "written by another program: train the run again, or resume it to rewrite its checkpoint.") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path} holds no model weights (expected a Transfer Learning Lab checkpoint): "
                              "train the run again.")
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    if given.is_dir() and path.name == BEST_NAME and not explicit and config.get("use_weights") == "last":  # the run itself chose its last epoch's weights
        return load_run_model(given, "last")
    class_names = [str(c) for c in (ckpt.get("class_names") or [])]
    backbone = ckpt.get("backbone") or config.get("backbone")
    image_size = ckpt.get("image_size") or config.get("image_size")
    missing = [k for k, v in (("class_names", class_names), ("backbone", backbone), ("image_size", image_size)) if not v]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it was not written by this app's trainer. "
                              "Train the run again.")
    try:
        spec = backbones.get(str(backbone))
    except TLabError as e:
        raise CheckpointError(f"{path} was trained with a backbone this app doesn't know ({e})") from None
    image_size = int(image_size)
    model = backbones.build(spec, len(class_names), image_size)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} does not fit {spec.title} with {len(class_names)} classes ({first[:200]}): "
            "the checkpoint may come from another version of the app; train the run again.") from None
    model.eval()
    epoch = ckpt.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int) else None
    cal = load_calibration(path.parent)
    # The temperature was fitted for the weights that scored the test split: only those get it.
    temperature = float(cal["temperature"]) if cal.get("epoch") == epoch and cal.get("temperature") else 1.0
    return LoadedModel(model, spec, class_names, image_size, dict(config), path, epoch, temperature,
                       "best" if path.name == BEST_NAME else "last")
