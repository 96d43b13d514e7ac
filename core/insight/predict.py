"""Predictions from a trained run (loaded by `core.train.checkpoint`):
classify one image.

The image goes through exactly the preprocessing of training: decoded by
`data.decode_image` (EXIF rotation, RGB, short side resized to the run's
image size, centre crop) and normalised by `data.batch_input` with the
backbone's mean/std. Nothing is cached here; the page caches the loaded model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.errors import DataError
from core.train import data
from core.train.checkpoint import LoadedModel

IMAGE_HINT = "use PNG, JPEG, WebP or BMP"


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
def probabilities(loaded: LoadedModel, x: torch.Tensor, calibrated: bool = False, tta: bool = False) -> torch.Tensor:
    """Softmax class probabilities (B, classes) for a uint8 batch (B, C, S, S)
    at the model's image size, normalised as in training. `calibrated`: the
    logits divided by the run's fitted temperature; `tta`: the mean of the
    image's and its mirror image's probabilities (test-time augmentation)."""
    loaded.model.eval()
    inputs = data.batch_input(x.cpu(), loaded.spec.mean, loaded.spec.std)
    t = loaded.temperature if calibrated else 1.0
    probs = torch.softmax(loaded.model(inputs).float() / t, dim=1)
    if tta:
        probs = (probs + torch.softmax(loaded.model(inputs.flip(-1)).float() / t, dim=1)) / 2
    return probs


def calibrated(loaded: LoadedModel) -> bool:
    """Whether the run has a fitted temperature for these weights."""
    return loaded.temperature != 1.0


def predict(loaded: LoadedModel, image: bytes | Path | str, k: int = 5, calibrated: bool = True,
            tta: bool = False) -> list[tuple[str, float]]:
    """The top-k (class name, probability) for one image, most likely first;
    k is capped at the number of classes. Calibrated by the run's temperature
    (when it has one) unless `calibrated` is False."""
    probs = probabilities(loaded, load_image(image, loaded.image_size), calibrated, tta)[0]
    k = max(1, min(int(k), len(loaded.class_names)))
    top = torch.topk(probs, k)
    return [(loaded.class_names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
