"""CLI commands that look inside a trained run: `explain` (Grad-CAM),
`evaluate` (confusion matrix, per-class metrics, top losses), `embed`
(feature-space projection before and after training), `filters`,
`feature-maps`, `lr-find` and `export`.

`--run` takes a run id from the store (see `runs`) or a run folder or
checkpoint path, so exported folders and other data folders work too. Like
everything the app writes, the files named by `--out` and `--out-dir` must lie
inside the data folder (`paths.inside_home`).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from core.cli.options import run_config, train_options
from core.cli.output import print_table
from core.errors import TLabError


def _loaded(run: str):
    from core import paths
    from core.train.checkpoint import load_run_model

    if paths.RUN_ID_RE.fullmatch(run) and paths.run_dir(run).exists():
        return load_run_model(paths.run_dir(run))
    p = Path(run).expanduser()
    if p.exists():  # a run folder or checkpoint elsewhere: read-only, loaded with weights_only
        return load_run_model(p)
    folder = paths.run_dir(run)  # validates the id before any path is built from it
    if not folder.exists():
        raise TLabError(f"No run {run!r} in {paths.home()}: give a run id (see `python -m core runs`), "
                        "or the path of a run folder or checkpoint.")
    return load_run_model(folder)


def _class_index(loaded, name: str | None) -> int | None:
    if name is None:
        return None
    if name not in loaded.class_names:
        raise TLabError(f"Class {name!r} is not one of this run's classes: {', '.join(loaded.class_names)}.")
    return loaded.class_names.index(name)


def _picture(panels: list[tuple[str, np.ndarray]], pad: int = 8) -> np.ndarray:
    """Pictures side by side, each with its title above, on white."""
    from PIL import Image, ImageDraw

    title_h = 18
    h = max(p.shape[0] for _, p in panels) + title_h + 2 * pad
    w = sum(p.shape[1] for _, p in panels) + pad * (len(panels) + 1)
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for title, p in panels:
        draw.text((x, pad), title, fill=(30, 30, 30))
        canvas.paste(Image.fromarray(p), (x, pad + title_h))
        x += p.shape[1] + pad
    return np.asarray(canvas)


def _stack(rows: list[tuple[str, np.ndarray]], pad: int = 8) -> np.ndarray:
    """Pictures one under the other, each with its title above."""
    from PIL import Image, ImageDraw

    title_h = 18
    w = max(p.shape[1] for _, p in rows) + 2 * pad
    h = sum(p.shape[0] + title_h + pad for _, p in rows) + pad
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for title, p in rows:
        draw.text((pad, y), title, fill=(30, 30, 30))
        canvas.paste(Image.fromarray(p), (pad, y + title_h))
        y += title_h + p.shape[0] + pad
    return np.asarray(canvas)


def _output(out: str, what: str) -> Path:
    """Where to write a file the user named: inside the data folder only."""
    from core import paths

    return paths.inside_home(out, what)


def _save_png(rgb: np.ndarray, out: str) -> Path:
    from PIL import Image

    path = _output(out, "picture")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path, format="PNG")
    except (OSError, ValueError) as e:
        raise TLabError(f"Can't write {path} ({e}): give a writable .png path.") from None
    return path


def _say(args, obj: dict, text: str) -> None:
    print(json.dumps(obj, indent=2, default=str) if args.json else text)


# --- commands ---------------------------------------------------------------------------


def cmd_explain(args) -> int:
    from core.insight import explain, predict

    loaded = _loaded(args.run)
    x = predict.load_image(args.image, loaded.image_size)
    cam = explain.gradcam(loaded.model, loaded.spec, x, _class_index(loaded, args.class_name), method=args.method)
    name, pred = loaded.class_names[cam.class_index], loaded.class_names[cam.predicted_index]
    title = explain.CAM_METHODS[cam.method]
    pic = _picture([("your image, as the model sees it", explain.upscale(explain.to_rgb(x), 224)),
                    (f"{title} for {name!r} (p={cam.probability:.3f})", explain.overlay(x, cam.heatmap, size=224))])
    out = _save_png(pic, args.out)
    peak = np.unravel_index(int(np.argmax(cam.heatmap)), cam.heatmap.shape)
    _say(args, {"out": str(out), "class": name, "probability": cam.probability, "predicted": pred,
                "layer": cam.layer, "feature_map": list(cam.feature_size), "peak_yx": [int(v) for v in peak],
                "method": cam.method},
         f"{title} of {loaded.spec.title} for class {name!r} (p={cam.probability:.3f}; predicted {pred!r}) "
         f"from layer {cam.layer} ({cam.feature_size[0]}x{cam.feature_size[1]} map) -> {out}")
    return 0


def cmd_evaluate(args) -> int:
    from core.insight import evaluate, explain

    loaded = _loaded(args.run)
    ev = evaluate.evaluate_run(loaded, args.split)
    tta = evaluate.evaluate_run(loaded, args.split, tta=True).accuracy if args.tta else None
    cm = ev.confusion()
    metrics = evaluate.per_class_metrics(cm, ev.class_names)
    top = ev.top_losses(args.top_losses)
    losses = [{"index": int(i), "true": ev.class_names[ev.y[i]], "predicted": ev.class_names[ev.predicted[i]],
               "probability": float(ev.probs[i, ev.predicted[i]]), "loss": float(ev.losses[i])} for i in top]
    if args.out_dir:
        d = _output(args.out_dir, "report")
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "confusion.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["true \\ predicted", *ev.class_names])
            for name, row in zip(ev.class_names, cm.tolist()):
                w.writerow([name, *row])
        with open(d / "per_class.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["class", "precision", "recall", "f1", "support"])
            w.writeheader()
            w.writerows(metrics)
        if len(top):
            tiles = [explain.upscale(explain.to_rgb(ev.x[i]), 96) for i in top]
            rows = [(f"{r['true']} -> {r['predicted']} ({r['probability']:.2f})", t) for r, t in zip(losses, tiles)]
            _save_png(_picture(rows[:6]) if len(rows) <= 6 else _stack([("", _picture(rows[:6])), ("", _picture(rows[6:12]))]),
                      str(d / "top_losses.png"))
    if args.json:
        print(json.dumps({"split": args.split, "images": len(ev), "accuracy": ev.accuracy, "accuracy_tta": tta,
                          "balanced_accuracy": ev.balanced_accuracy, "epoch": loaded.epoch, "class_names": ev.class_names,
                          "confusion": cm.tolist(), "per_class": metrics, "top_losses": losses}, indent=2))
        return 0
    print(f"{loaded.spec.title} (epoch {loaded.epoch}'s weights) on its {args.split} split: {len(ev)} images, "
          f"accuracy {ev.accuracy:.4f}" + (f", with flip TTA {tta:.4f}" if tta is not None else "")
          + f", balanced accuracy {ev.balanced_accuracy:.4f}\n")
    print("confusion matrix (rows: true class, columns: predicted)")
    print_table([{"true": n, **{c: v for c, v in zip(ev.class_names, row)}} for n, row in zip(ev.class_names, cm.tolist())],
                 ["true", *ev.class_names])
    print()
    print_table([{**m, **{k: f"{m[k]:.3f}" for k in ("precision", "recall", "f1")}} for m in metrics],
                 ["class", "precision", "recall", "f1", "support"])
    print(f"\ntop losses (the most confidently wrong){'' if losses else ': none, every image is right'}")
    if losses:
        print_table([{**r, "probability": f"{r['probability']:.3f}", "loss": f"{r['loss']:.3f}"} for r in losses],
                     ["index", "true", "predicted", "probability", "loss"])
    if args.out_dir:
        print(f"\nwrote confusion.csv, per_class.csv{', top_losses.png' if len(top) else ''} to {args.out_dir}")
    return 0


def cmd_embed(args) -> int:
    from core.service import looking

    loaded = _loaded(args.run)
    emb = looking.before_after(loaded, args.split, args.method, args.max_points)
    if emb.stages["before"] is None:
        raise TLabError(emb.before_error)
    y, out, rows = emb.y, {}, []
    for stage, (xy, sep) in emb.stages.items():
        out[stage] = sep
        rows += [{"stage": stage, "x": float(a), "y": float(b), "label": int(l), "class": loaded.class_names[int(l)]}
                 for (a, b), l in zip(xy.tolist(), y.tolist())]
    if args.out:
        path = _output(args.out, "coordinates")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, ["stage", "x", "y", "label", "class"])
            w.writeheader()
            w.writerows(rows)
    _say(args, {"method": args.method, "points": len(y), "separation_before": out["before"],
                "separation_after": out["after"], "out": args.out},
         f"{len(y)} {args.split} images, {args.method}: class separation (nearest-centroid accuracy of the features) "
         f"{out['before']:.3f} before training -> {out['after']:.3f} after"
         + (f"; coordinates in {args.out}" if args.out else ""))
    return 0


def cmd_filters(args) -> int:
    from core.insight import embeddings, explain
    from core.train import strategies

    loaded = _loaded(args.run)
    start = embeddings.initial_model(loaded.config, loaded.num_classes)
    pretrained = strategies.get(str(loaded.config.get("strategy"))).pretrained
    layer, before = explain.first_conv_filters(start)
    _, after = explain.first_conv_filters(loaded.model)
    panels = [("pretrained start" if pretrained else "random start", before), ("after training", after)]
    if args.twin:
        _, twin = explain.first_conv_filters(_loaded(args.twin).model)
        panels.append(("scratch twin", twin))
    out = _save_png(_picture(panels), args.out)
    _say(args, {"layer": layer, "out": str(out), "panels": [p for p, _ in panels]},
         f"first convolution ({layer}) of {loaded.spec.title}: {', '.join(p for p, _ in panels)} -> {out}")
    return 0


def cmd_feature_maps(args) -> int:
    from core.insight import explain, predict

    loaded = _loaded(args.run)
    x = predict.load_image(args.image, loaded.image_size)
    stages = explain.feature_maps(loaded.model, loaded.spec, x, args.per_stage)
    rows = [("input", explain.upscale(explain.to_rgb(x), 64))]
    rows += [(f"{s.group}{'' if s.module == s.group else f' ({s.module})'}: {s.channels} channels at {s.size[0]}x{s.size[1]}, the {len(s.indices)} most active",
              explain.maps_strip(s.maps)) for s in stages]
    out = _save_png(_stack(rows), args.out)
    _say(args, {"out": str(out), "stages": [{"group": s.group, "module": s.module, "channels": s.channels,
                                             "size": list(s.size), "shown": s.indices} for s in stages]},
         f"feature maps of {len(stages)} stages ({', '.join(s.group for s in stages)}) -> {out}")
    return 0


def cmd_lr_find(args) -> int:
    from core.insight import lr_finder
    from core.service import forms
    from core.train.config import RunConfig

    cfg = forms.checked(RunConfig.from_json(args.config_json)) if args.config_json else run_config(args)
    path = _output(args.out, "LR finder table") if args.out else None
    result = lr_finder.find_lr(cfg, args.steps, args.start_lr, args.end_lr)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["lr", "loss", "smoothed_loss"])
            w.writerows(zip(result.lrs, result.losses, result.smoothed))
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    tried = f"{len(result.lrs)} steps from {result.lrs[0]:.1e} to {result.lrs[-1]:.1e}"
    ended = " (stopped: the loss diverged)" if result.stopped_early else ""
    if result.suggestion is None:
        print(f"LR finder: {tried}{ended}; no suggestion: {result.reason}.")
    else:
        print(f"LR finder: {tried}{ended}. Suggested learning rate {result.suggestion:.2e} ({result.reason}); "
              f"train with --lr {result.suggestion:.2e}")
    if args.out:
        print(f"loss per LR in {args.out}")
    return 0


def _run_facts(run_id: str) -> dict:
    """The run's id and what its result recorded (calibration, when the run measured it), for the model card."""
    from core.runs.store import Store

    try:
        row = Store().run(run_id)
    except TLabError:
        return {"run_id": run_id}
    result = json.loads(row.get("result") or "{}")
    return {"run_id": run_id, **{k: v for k, v in result.items() if "calibrat" in k or k == "ece"}}


def cmd_export(args) -> int:
    from core.insight import export

    from core import paths

    from core.insight import bundle

    loaded = _loaded(args.run)
    run_id = loaded.checkpoint.parent.name
    target = Path(args.out or paths.home() / "exports" / bundle.file_name(run_id, args.format))
    if target.suffix.lower() == ".zip":  # a bundle: model file, safetensors, signature.json, README.md
        out = bundle.write(loaded, args.format, target, _run_facts(run_id))
    else:  # only the model file, for a script that wants just it
        out = export.export(loaded, args.format, target)
    size = out.stat().st_size / 1e6
    info = {"out": str(out), "format": args.format, "megabytes": round(size, 3)}
    text = f"exported {loaded.spec.title} ({loaded.num_classes} classes, {loaded.image_size} px) as {args.format} -> {out} ({size:.2f} MB)"
    if args.verify and args.format != "pt":
        v = export.verify_run(out, args.format, loaded)
        info.update(images=v.images, max_abs_diff=v.max_abs_diff, top1_agreement=v.top1_agreement,
                    float32_error=v.float32_error, ok=v.ok)
        text += "\n" + v.describe()
    _say(args, info, text)
    return 0 if info.get("ok", True) else 1


# --- parser -------------------------------------------------------------------------------


def register(sub) -> None:

    def run_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run", required=True, help="run id (see `runs`), or a run folder or checkpoint path")
        p.add_argument("--json", action="store_true")

    sp = sub.add_parser("explain", help="Grad-CAM: where in an image the evidence for a class is")
    run_arg(sp)
    sp.add_argument("--image", required=True, help="an image file (PNG, JPEG, WebP, BMP)")
    sp.add_argument("--out", required=True, help="PNG to write: the image and its heat-map overlay")
    sp.add_argument("--class", dest="class_name", default=None, help="explain this class (default: the predicted one)")
    sp.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"],
                    help="Grad-CAM, or Grad-CAM++ (gradients weighed by their higher powers)")
    sp.set_defaults(func=cmd_explain)

    sp = sub.add_parser("evaluate", help="confusion matrix, per-class precision/recall/F1 and top losses")
    run_arg(sp)
    sp.add_argument("--split", default="test", choices=["train", "val", "test"])
    sp.add_argument("--top-losses", type=int, default=12, help="how many of the worst mistakes to list")
    sp.add_argument("--tta", action="store_true", help="also the accuracy with flip test-time augmentation")
    sp.add_argument("--out-dir", default=None, help="also write confusion.csv, per_class.csv and top_losses.png here")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("embed", help="2-D projection of the features before and after training")
    run_arg(sp)
    sp.add_argument("--method", default="pca", choices=["pca", "tsne"])
    sp.add_argument("--split", default="test", choices=["train", "val", "test"])
    sp.add_argument("--max-points", type=int, default=2000, help="subsample (stratified) beyond this many images")
    sp.add_argument("--out", default=None, help="CSV of the coordinates (stage, x, y, label, class)")
    sp.set_defaults(func=cmd_embed)

    sp = sub.add_parser("filters", help="the first convolution's filters at the start and after training")
    run_arg(sp)
    sp.add_argument("--twin", default=None, help="also draw this run's filters (e.g. the scratch twin)")
    sp.add_argument("--out", required=True, help="PNG to write")
    sp.set_defaults(func=cmd_filters)

    sp = sub.add_parser("feature-maps", help="what each stage makes of an image, stem to last stage")
    run_arg(sp)
    sp.add_argument("--image", required=True, help="an image file")
    sp.add_argument("--per-stage", type=int, default=8, help="channels shown per stage (the most active)")
    sp.add_argument("--out", required=True, help="PNG to write")
    sp.set_defaults(func=cmd_feature_maps)

    sp = sub.add_parser("lr-find", help="LR range test for a run as configured; suggests a learning rate")
    train_options(sp, skip=("steps",))
    sp.add_argument("--steps", type=int, default=100, help="steps of the range test (default 100)")
    sp.add_argument("--start-lr", type=float, default=1e-7)
    sp.add_argument("--end-lr", type=float, default=10.0)
    sp.add_argument("--out", default=None, help="CSV of lr, loss, smoothed loss")
    sp.add_argument("--config-json", default=None, help=argparse.SUPPRESS)  # the dashboard passes its form this way
    sp.set_defaults(func=cmd_lr_find)

    sp = sub.add_parser("export", help="a finished run as a pt checkpoint ZIP, TorchScript or ONNX")
    run_arg(sp)
    sp.add_argument("--format", required=True, choices=["pt", "torchscript", "onnx"])
    sp.add_argument("--out", default=None, help="the bundle to write, a .zip inside the data folder (default: "
                                                "exports/RUN-FORMAT.zip there); a name ending in .onnx or .pt writes only the model file")
    sp.add_argument("--verify", action="store_true", help="compare the export with the PyTorch model on the test split")
    sp.set_defaults(func=cmd_export)
