"""A backbone's real structure for an input size, derived from the model: each
layer group's output shape, channels, blocks and parameters, with the
parameter-free modules that change the shape (pooling) between them.

For ResNet-18 at 224 px this is the textbook table: conv1 (stem) 64x112x112,
maxpool 64x56x56, layer1..layer4 with 2 blocks each down to 512x7x7, avgpool
512x1x1, fc. Nothing is typed in: shapes come from a forward pass on the meta
device (no memory, no weights), parameters from the modules.
"""

from __future__ import annotations

import torch
from torch import nn

from core.train import backbones
from core.train.backbones import BackboneSpec


def _blocks(target: nn.Module | nn.Parameter) -> int:
    """Blocks under a group path: a Sequential's entries, one for a composite
    module (a residual block), none for a single layer or parameter."""
    if isinstance(target, (nn.Sequential, nn.ModuleList)):
        return len(target)
    if isinstance(target, nn.Module) and any(any(True for _ in c.parameters()) for c in target.children()):
        return 1
    return 0


def _shape(out) -> tuple[int, ...] | None:
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None


def stage_table(spec: BackboneSpec, image_size: int, num_classes: int = 1000) -> list[dict]:
    """Rows in forward order: group (or module, for pooling), modules, output
    shape (without the batch), channels, blocks, params."""
    with torch.device("meta"):
        model = backbones.build(spec, num_classes, image_size)
    model.eval()
    in_group = {path: group for group, paths in spec.groups for path in paths}
    seen: list[tuple[str, str, tuple]] = []  # (group or module name, path, output shape) in call order

    def hook(name: str, path: str):
        def fn(_m, _i, out):
            shape = _shape(out)
            if shape is not None:
                seen.append((name, path, shape))
        return fn

    hooks = []
    for path, group in in_group.items():
        target = backbones.resolve(model, path)
        if isinstance(target, nn.Module):
            hooks.append(target.register_forward_hook(hook(group, path)))
    for name, child in model.named_children():  # shape-changing, parameter-free top-level modules
        if name not in in_group and not any(True for _ in child.parameters()):
            hooks.append(child.register_forward_hook(hook(name, name)))
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, image_size, image_size, device="meta"))
    finally:
        for h in hooks:
            h.remove()

    rows: list[dict] = []
    last_shape: tuple | None = (3, image_size, image_size)
    for name, path, shape in seen:
        if name not in spec.group_names and shape == last_shape:
            continue  # an activation or dropout: nothing to show
        if rows and rows[-1]["stage"] == name:
            rows[-1]["output_shape"] = shape
        else:
            rows.append({"stage": name, "output_shape": shape})
        last_shape = shape
    groups = dict(spec.groups)
    for r in rows:
        paths = groups.get(r["stage"], ())
        shape = r["output_shape"]
        r["modules"] = ", ".join(paths) if paths else r["stage"]
        r["channels"] = int(shape[0] if len(shape) == 3 else shape[-1])
        r["blocks"] = max(1, sum(_blocks(backbones.resolve(model, p)) for p in paths)) if paths else 0
        r["params"] = sum(backbones.path_params(model, p) for p in paths)
        r["output_shape"] = "x".join(str(s) for s in shape)
    return rows
