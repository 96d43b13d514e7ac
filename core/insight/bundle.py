"""An export as a bundle a person can deploy: one ZIP under the data folder's
exports/ holding the format's model file, the weights as safetensors,
`signature.json` (what goes in and what comes out) and a `README.md` model
card (what the model is, how well it did, how to load it in five lines).

The signature says exactly the preprocessing the app's own prediction does
(`core.train.data.decode_image`): RGB, the centred square cropped and resized
to the input size with Pillow's bilinear filter (reducing_gap 3), values / 255.
TorchScript and ONNX models normalise inside; `model.pt` and the safetensors
weights expect the mean/std applied first.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from core.insight import export
from core.train import data
from core.train.checkpoint import LoadedModel

MODEL_FILES = export.MODEL_FILES
PREPROCESS = ("decode, apply EXIF rotation, convert to RGB (transparency over white), crop the centred square, "
              "resize it to size x size with Pillow's BILINEAR filter (reducing_gap=3.0), divide by 255")


def file_name(run_id: str, fmt: str) -> str:
    return f"{run_id}-{fmt}.zip"


def signature(loaded: LoadedModel, fmt: str) -> dict:
    inside = fmt != "pt"
    s = loaded.image_size
    return {
        "format": fmt, "model_file": MODEL_FILES[fmt], "weights_file": "model.safetensors",
        "backbone": loaded.spec.name, "class_names": list(loaded.class_names),
        "input": {"name": export.INPUT_NAME, "shape": ["batch", 3, s, s], "dtype": "float32", "layout": "NCHW",
                  "size": s, "colour_order": "RGB", "value_range": [0.0, 1.0], "preprocess": PREPROCESS,
                  "mean": list(loaded.spec.mean), "std": list(loaded.spec.std),
                  "normalised_inside_model": inside,
                  "note": ("feed values in [0, 1]: the model subtracts mean and divides by std itself" if inside else
                           "model.pt and model.safetensors are the bare network: feed (x - mean) / std")},
        "output": {"name": export.OUTPUT_NAME, "shape": ["batch", loaded.num_classes], "kind": "logits",
                   "note": "one score per class in class_names order; softmax gives probabilities"},
    }


def _pretraining(loaded: LoadedModel) -> str:
    cfg = loaded.config
    from core.train import strategies

    try:
        pretrained = strategies.get(str(cfg.get("strategy"))).pretrained
    except Exception:
        pretrained = True
    if not pretrained:
        return "none: trained from random weights"
    if cfg.get("weights"):
        return f"a weights file given for the run ({Path(str(cfg['weights'])).name})"
    w = loaded.spec.weights
    return {None: "none: trained from random weights", "bundled": "ImageNet-1k (weights bundled with the app)"}.get(
        w, f"ImageNet ({w})")


def facts(loaded: LoadedModel) -> dict:
    """Test accuracy, per-class F1 and split sizes, measured on the run's own splits."""
    from core.insight import evaluate

    sizes = {which: len(data.run_split(loaded.config, which)) for which in ("train", "val", "test")}
    ev = evaluate.evaluate_run(loaded, "test")
    per_class = evaluate.per_class_metrics(ev.confusion(), list(loaded.class_names))
    return {"sizes": sizes, "test_accuracy": ev.accuracy, "per_class": per_class}


def _snippets(sig: dict, fmt: str) -> str:
    s = sig["input"]["size"]
    onnx = ("```python\n"
            "import json, numpy as np, onnxruntime as ort; from PIL import Image\n"
            "sig = json.load(open(\"signature.json\")); im = Image.open(\"image.png\").convert(\"RGB\"); side = min(im.size)\n"
            "box = ((im.width - side) / 2, (im.height - side) / 2, (im.width + side) / 2, (im.height + side) / 2)\n"
            f"x = np.asarray(im.resize(({s}, {s}), Image.BILINEAR, box=box, reducing_gap=3.0), np.float32).transpose(2, 0, 1)[None] / 255\n"
            "logits = ort.InferenceSession(\"model.onnx\").run(None, {\"images\": x})[0]; print(sig[\"class_names\"][int(logits.argmax())])\n"
            "```\n")
    torch_ts = ("```python\n"
                "import torch  # x: float32 (N, 3, S, S) RGB in [0, 1], preprocessed as above\n"
                "model = torch.jit.load(\"model.torchscript.pt\").eval()\n"
                "logits = model(x)\n```\n")
    torch_st = ("```python\n"
                "import json, torch; from safetensors.torch import load_file\n"
                "from core.train import backbones  # this app's model builder (Transfer Learning Lab on the path)\n"
                "sig = json.load(open(\"signature.json\")); spec = backbones.get(sig[\"backbone\"])\n"
                "model = backbones.build(spec, len(sig[\"class_names\"]), sig[\"input\"][\"size\"]).eval(); model.load_state_dict(load_file(\"model.safetensors\"))\n"
                "m, s = (torch.tensor(sig[\"input\"][k]).view(1, 3, 1, 1) for k in (\"mean\", \"std\")); logits = model((torch.from_numpy(x) - m) / s)\n"
                "```\n")
    out = "## Load it\n\n"
    if fmt == "onnx":
        out += "With onnxruntime, numpy and Pillow only (`image.png` is your image):\n\n" + onnx + "\n"
    else:
        out += ("The preprocessing, with numpy and Pillow (`image.png` is your image), as the app does it:\n\n"
                + onnx.replace("logits = ort.InferenceSession(\"model.onnx\").run(None, {\"images\": x})[0]; "
                               "print(sig[\"class_names\"][int(logits.argmax())])\n", "") + "\n")
    if fmt == "torchscript":
        out += "With PyTorch alone (no Python class needed):\n\n" + torch_ts + "\n"
    out += "With PyTorch from the safetensors weights (the bare network: normalise first):\n\n" + torch_st
    return out


def model_card(loaded: LoadedModel, fmt: str, measured: dict, extra: dict | None = None) -> str:
    """README.md: what the model is, its data and splits, how well it did, how to load it."""
    cfg, sig, extra = loaded.config, signature(loaded, fmt), extra or {}
    lines = [f"# {loaded.spec.title} fine-tuned on {cfg.get('dataset', '?')} ({loaded.num_classes} classes)", "",
             "Exported by Transfer Learning Lab" + (f" from run `{extra['run_id']}`" if extra.get("run_id") else "") + ".", "",
             "## Model", "",
             f"- Backbone: {loaded.spec.title} (`{loaded.spec.name}`)",
             f"- Pretraining: {_pretraining(loaded)}",
             f"- Strategy: {cfg.get('strategy', '?')}, {cfg.get('epochs', '?')} epoch(s), batch {cfg.get('batch_size', '?')}, "
             f"seed {cfg.get('seed', '?')}",
             f"- Input: {sig['input']['colour_order']} {loaded.image_size}x{loaded.image_size}, values in [0, 1]; "
             f"mean {list(loaded.spec.mean)}, std {list(loaded.spec.std)} "
             f"({'applied inside the model' if sig['input']['normalised_inside_model'] else 'apply them before model.pt / safetensors'})",
             "- Output: logits, one per class in `signature.json`'s `class_names` order",
             f"- Files: `{MODEL_FILES[fmt]}`, `model.safetensors`, `signature.json`", "",
             "## Data", "",
             f"- Dataset: {cfg.get('dataset', '?')}"
             + (f", {cfg['labels_per_class']} labelled images per class" if cfg.get("labels_per_class") else ""),
             "- Splits: " + ", ".join(f"{k} {v}" for k, v in measured["sizes"].items()) + " images "
             f"(validation {cfg.get('val_fraction', 0.15)}, test {cfg.get('test_fraction', 0.15)} of the images, stratified)",
             f"- Classes: {', '.join(loaded.class_names)}", "",
             "## Results on the test split", "",
             f"Test accuracy: {measured['test_accuracy']:.4f}", "",
             "| class | precision | recall | F1 | images |", "|---|---|---|---|---|"]
    lines += [f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
              for r in measured["per_class"]]
    calibration = {k: v for k, v in extra.items() if "calibrat" in k or k in ("ece", "temperature_scaling")}
    lines += ["", "Calibration: " + (", ".join(f"{k} {v}" for k, v in calibration.items()) if calibration
                                      else "not measured for this run."), "", _snippets(sig, fmt)]
    return "\n".join(lines)


def _safetensors(loaded: LoadedModel) -> bytes:
    from safetensors.torch import save

    # Clones: tied weights share storage, which safetensors refuses; load_state_dict fills both names again.
    return save({k: v.detach().cpu().contiguous().clone() for k, v in loaded.model.state_dict().items()})


def build(loaded: LoadedModel, fmt: str, extra: dict | None = None) -> bytes:
    """The bundle's ZIP bytes."""
    export._check_format(fmt)
    if fmt == "pt":
        buf = io.BytesIO()
        torch.save(loaded.model.state_dict(), buf)
        model_bytes = buf.getvalue()
    else:
        model_bytes = export.to_bytes(loaded, fmt)
    sig = signature(loaded, fmt)
    card = model_card(loaded, fmt, facts(loaded), extra)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MODEL_FILES[fmt], model_bytes)
        zf.writestr("model.safetensors", _safetensors(loaded))
        zf.writestr("signature.json", json.dumps(sig, indent=2))
        zf.writestr("README.md", card)
        if fmt == "pt":  # what the pt ZIP always held, for code that reads it
            zf.writestr("config.json", json.dumps(export.model_card(loaded), indent=2, default=str))
            zf.writestr("class_names.json", json.dumps(list(loaded.class_names), indent=2))
    return out.getvalue()


def write(loaded: LoadedModel, fmt: str, out: str | Path, extra: dict | None = None) -> Path:
    """Write the bundle to `out` (a .zip inside the data folder). Returns its path."""
    from core import paths

    out = paths.inside_home(out, "export")
    if out.suffix.lower() != ".zip":
        raise export.ExportError(f"A bundle is a ZIP: name it {out.with_suffix('.zip').name}.")
    content = build(loaded, fmt, extra)
    return paths.write_atomic(out, content, export.ExportError)
