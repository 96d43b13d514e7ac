"""Predictions from a trained run: load its checkpoint, classify one image.

The image goes through exactly the preprocessing of training: decoded by
`data.decode_image` (EXIF rotation, RGB, short side resized to the run's
image size, centre crop) and normalised by `data.batch_input` with the
backbone's mean/std. Nothing is cached here; the page caches the loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import DataError, TLabError
from core.train import backbones, data
from core.train.backbones import BackboneSpec

CHECKPOINT_NAME = "checkpoint.pt"
IMAGE_HINT = "use PNG, JPEG, WebP or BMP"


class CheckpointError(TLabError):
    """A run's checkpoint is missing, unreadable or doesn't fit its backbone."""


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on the CPU
    spec: BackboneSpec
    class_names: list[str]
    image_size: int
    config: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    epoch: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def checkpoint_path(run_dir_or_checkpoint: str | Path) -> Path:
    """The checkpoint file of a run folder, or the file itself."""
    p = Path(run_dir_or_checkpoint).expanduser()
    return p / CHECKPOINT_NAME if p.is_dir() else p


def load_run_model(run_dir_or_checkpoint: str | Path) -> LoadedModel:
    """The model of a run, from its folder or its checkpoint file, ready to
    predict: built for its backbone, class count and image size, weights
    loaded, eval mode, CPU. Raises CheckpointError with what to do."""
    given = Path(run_dir_or_checkpoint).expanduser()
    path = checkpoint_path(given)
    if not path.exists():
        if given.is_dir():
            raise CheckpointError(
                f"Run folder {given} has no {CHECKPOINT_NAME} yet: a run writes one at the end of each epoch, "
                "so wait for its first epoch to finish (or resume it if it was interrupted).")
        raise CheckpointError(
            f"No checkpoint at {path}: the run folder was moved or deleted, or the run never finished an epoch.")
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
    return LoadedModel(model, spec, class_names, image_size, dict(config), path,
                       int(epoch) if isinstance(epoch, int) else None)


def _image_bytes(image: Any) -> bytes | Path:
    if isinstance(image, (bytes, Path)):
        return image
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, str):
        return Path(image).expanduser()
    getvalue = getattr(image, "getvalue", None) or getattr(image, "read", None)  # uploads, open files
    if callable(getvalue):
        return bytes(getvalue())
    raise TypeError(f"predict() takes image bytes or a file path, not {type(image).__name__}")


def load_image(image: bytes | Path | str, image_size: int) -> torch.Tensor:
    """One image as the trainer sees it: uint8 (1, 3, S, S). Raises DataError
    when it can't be read."""
    src = _image_bytes(image)
    if isinstance(src, Path) and not src.is_file():
        raise DataError(f"could not read the image: {src} is not a file; {IMAGE_HINT}.")
    if isinstance(src, bytes) and not src:
        raise DataError(f"could not read the image: the file is empty; {IMAGE_HINT}.")
    from PIL import Image, UnidentifiedImageError

    try:
        arr = data.decode_image(src, image_size)
    except UnidentifiedImageError:
        raise DataError(f"could not read the image: it is not in an image format this app can open; {IMAGE_HINT}.") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"could not read the image: it claims too many pixels ({e}); "
                        f"shrink it first, and {IMAGE_HINT}.") from None
    except Exception as e:  # PIL raises many types for broken or unsupported files
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DataError(f"could not read the image: {reason} ({type(e).__name__}); {IMAGE_HINT}.") from None
    return torch.from_numpy(arr)[None]


@torch.inference_mode()
def probabilities(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities (B, classes) for a uint8 batch (B, C, S, S)
    at the model's image size, normalised as in training."""
    loaded.model.eval()
    inputs = data.batch_input(x.cpu(), loaded.spec.mean, loaded.spec.std)
    return torch.softmax(loaded.model(inputs).float(), dim=1)


def predict(loaded: LoadedModel, image: bytes | Path | str, k: int = 5) -> list[tuple[str, float]]:
    """The top-k (class name, probability) for one image, most likely first;
    k is capped at the number of classes."""
    probs = probabilities(loaded, load_image(image, loaded.image_size))[0]
    k = max(1, min(int(k), len(loaded.class_names)))
    top = torch.topk(probs, k)
    return [(loaded.class_names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
