"""Export a finished run for use outside this app.

Formats
- `pt`: a ZIP holding `model.pt` (the state dict), `config.json` (backbone,
  image size, normalisation, the run's config) and `class_names.json`.
  Load it here with `backbones.build(spec, len(class_names), image_size)` +
  `load_state_dict`.
- `torchscript`: one `.pt` file for `torch.jit.load`, no Python class needed.
- `onnx`: one `.onnx` file (torch's dynamo exporter, needs `onnx` and
  `onnxscript`), for ONNX Runtime and other engines.

TorchScript and ONNX models take a float batch (N, 3, S, S) of RGB values in
[0, 1] at the run's image size and return logits (N, classes): the
normalisation is inside them, so a user can't get it wrong. The batch size
is free. `verify` runs an export against the PyTorch model on images.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import TLabError
from core.train import data
from core.train.checkpoint import LoadedModel

log = logging.getLogger(__name__)

FORMATS = {"pt": ".zip", "torchscript": ".pt", "onnx": ".onnx"}
MIME = {"pt": "application/zip", "torchscript": "application/octet-stream", "onnx": "application/octet-stream"}
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# The model file's name inside an export bundle (core/insight/bundle.py).
MODEL_FILES = {"pt": "model.pt", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}


class ExportError(TLabError):
    pass


class CheckerMissing(ExportError):
    """The package that runs an export (onnxruntime) is not installed."""


class WithPreprocessing(nn.Module):
    """The model with its normalisation in front: [0, 1] RGB in, logits out."""

    def __init__(self, model: nn.Module, mean: tuple, std: tuple):
        super().__init__()
        self.model = model
        # Not "mean"/"std": names a backbone may use too, and ONNX needs them unique.
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.input_mean) / self.input_std)


def file_name(run_id: str, fmt: str) -> str:
    return f"{run_id}-{fmt}{FORMATS[fmt]}"


def model_card(loaded: LoadedModel) -> dict:
    """What a user needs to run the model elsewhere (config.json)."""
    return {
        "backbone": loaded.spec.name, "backbone_title": loaded.spec.title, "num_classes": loaded.num_classes,
        "class_names": list(loaded.class_names), "image_size": loaded.image_size,
        "mean": list(loaded.spec.mean), "std": list(loaded.spec.std), "epoch": loaded.epoch,
        "input": "float RGB (N, 3, S, S) normalised as (x / 255 - mean) / std for model.pt; "
                 "TorchScript and ONNX exports take x / 255 in [0, 1] and normalise inside",
        "config": loaded.config,
    }


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")


def to_bytes(loaded: LoadedModel, fmt: str) -> bytes:
    """The exported file's content."""
    _check_format(fmt)
    loaded.model.eval()
    if fmt == "pt":
        buf = io.BytesIO()
        weights = io.BytesIO()
        torch.save(loaded.model.state_dict(), weights)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("model.pt", weights.getvalue())
            zf.writestr("config.json", json.dumps(model_card(loaded), indent=2, default=str))
            zf.writestr("class_names.json", json.dumps(list(loaded.class_names), indent=2))
        return buf.getvalue()
    wrapped = WithPreprocessing(loaded.model, loaded.spec.mean, loaded.spec.std).eval()
    example = torch.rand(2, 3, loaded.image_size, loaded.image_size)
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still loads everywhere
            scripted = torch.jit.trace(wrapped, example)
            buf = io.BytesIO()
            torch.jit.save(scripted, buf)
        return buf.getvalue()
    return _onnx_bytes(wrapped, example, loaded.spec.title)


def _onnx_bytes(wrapped: nn.Module, example: torch.Tensor, title: str) -> bytes:
    try:
        import onnx  # noqa: F401  the dynamo exporter needs both
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the packages onnx and onnxscript ({e.name} is missing): "
                          "pip install -r requirements.txt.") from None
    import tempfile

    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), dynamo=True, verbose=False, external_data=False,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={"images": {0: batch}})
    except Exception as e:  # the exporter raises many types for unsupported operators
        reason = " ".join(str(e).split())[:300]
        raise ExportError(f"{title} could not be exported to ONNX ({type(e).__name__}: {reason}); "
                          "TorchScript or the pt checkpoint work for every backbone.") from None
    from core import paths

    scratch = paths.home()  # the exporter writes a file: inside the data folder too, never the system temp
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=scratch) as tmp:
        path = Path(tmp) / "model.onnx"
        program.save(str(path))
        return path.read_bytes()


def export(loaded: LoadedModel, fmt: str, out: str | Path) -> Path:
    """Write the export to `out`, a file inside the data folder (folders are
    created). Returns its resolved path."""
    from core import paths

    _check_format(fmt)
    out = paths.inside_home(out, "export")
    if out.is_dir():
        raise ExportError(f"{out} is a folder: give a file name, e.g. {out / ('model' + FORMATS[fmt])}.")
    content = to_bytes(loaded, fmt)
    return paths.write_atomic(out, content, ExportError)


# --- checking an export --------------------------------------------------------------


TOLERANCE = 1e-4  # largest |logit difference| an export may show


@dataclass
class Verification:
    images: int
    max_abs_diff: float  # largest |logit difference| against the PyTorch model
    top1_agreement: float  # share of images with the same top-1 class
    # How far the PyTorch model's own float32 logits are from float64 ones on
    # the first batch: rounding noise no float32 engine can get under.
    float32_error: float = 0.0

    @property
    def ok(self) -> bool:
        """Same top-1 everywhere, and logits within TOLERANCE, or, for deep
        nets whose large logits make float32 rounding alone exceed it, within
        twice PyTorch's own float32 error."""
        close = self.max_abs_diff <= max(TOLERANCE, 2 * self.float32_error)
        return close and self.top1_agreement == 1.0

    def describe(self) -> str:
        text = (f"checked on {self.images} test images: same top-1 for {self.top1_agreement:.1%}, "
                f"largest logit difference {self.max_abs_diff:.1e}")
        if self.max_abs_diff > TOLERANCE:
            text += (f" (PyTorch's own float32 rounding error here is {self.float32_error:.1e}: "
                     f"{'within it' if self.ok else 'NOT within it'})")
        return text


def runner(path: str | Path, fmt: str):
    """A function: float images in [0, 1] (N, 3, S, S) -> logits (numpy), from
    an exported torchscript or onnx file, or the bundle (ZIP) that holds it."""
    source = str(path)
    if fmt in ("torchscript", "onnx") and zipfile.is_zipfile(path):  # a TorchScript file is a ZIP too
        with zipfile.ZipFile(path) as zf:
            if MODEL_FILES[fmt] in zf.namelist():
                source = zf.read(MODEL_FILES[fmt])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
            module = torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu")

        def run_ts(images01: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return module(images01).numpy()

        return run_ts
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckerMissing("Checking an ONNX export needs onnxruntime: pip install onnxruntime.") from None
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        return lambda images01: session.run([OUTPUT_NAME], {INPUT_NAME: images01.numpy().astype(np.float32)})[0]
    raise ExportError(f"{fmt} exports are checked by loading their state dict; verify takes torchscript or onnx.")


def verify(path: str | Path, fmt: str, loaded: LoadedModel, x: torch.Tensor, batch: int = 256) -> Verification:
    """Compare an export with the PyTorch model on uint8 images x (N, C, S, S)."""
    import copy

    run = runner(path, fmt)
    model = loaded.model.eval()
    diffs, same, noise = [], 0, 0.0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        inputs = data.batch_input(xb, loaded.spec.mean, loaded.spec.std)
        with torch.inference_mode():
            ref = model(inputs).float()
            if i == 0:
                ref64 = copy.deepcopy(model).double()(inputs.double())
                noise = float((ref.double() - ref64).abs().max())
        got = run(data.to_unit(xb).contiguous())
        ref = ref.numpy()
        diffs.append(float(np.abs(got - ref).max()))
        same += int((got.argmax(1) == ref.argmax(1)).sum())
    return Verification(len(x), max(diffs) if diffs else 0.0, same / max(1, len(x)), noise)


def verify_run(path: str | Path, fmt: str, loaded: LoadedModel) -> Verification:
    """`verify` on the run's own test split."""
    return verify(path, fmt, loaded, data.run_split(loaded.config, "test").x)
