"""Any pretrained timm model as a backbone, named `timm:<model>[.<tag>]`.

Its registry entry (a `BackboneSpec`) is made on demand from the model
itself, built once on the meta device (shapes, no weights, no memory):
- layer groups from timm's `group_matcher(coarse=True)` (stem, each stage,
  the final norm folded into the last stage as timm folds it), then whatever
  it leaves unmatched split into "neck" and "head" (the classifier alone),
  each group written as the fewest module paths that cover its parameters;
- the classifier from `reset_classifier` / `get_classifier`;
- input size, mean and std from `timm.data.resolve_model_data_config`;
- the Grad-CAM layer from `feature_info` (its last entry), with the layout of
  that layer's output (a ViT's tokens, Swin's channels-last map);
- the image sizes it takes (a patch multiple, a minimum) from its patch
  embedding and its total stride.
Weights come from timm's Hugging Face hub cache (`core.train.hub`).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections import defaultdict

import torch
from torch import nn

from core.errors import ConfigError
from core.train import hub
from core.train.backbone_spec import BackboneSpec

PREFIX = "timm:"
HEAD, NECK, STEM = "head", "neck", "stem"


def _timm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's import-time deprecation notices are not the user's business
        import timm
        import timm.data  # noqa: F401
    return timm


def split_name(name: str) -> tuple[str, str]:
    """'timm:convnext_nano.in12k_ft_in1k' -> ('convnext_nano', 'in12k_ft_in1k'); the tag may be ''."""
    body = name.removeprefix(PREFIX).strip()
    arch, _, tag = body.partition(".")
    return arch, tag


def _pretrained_cfg(arch: str, tag: str):
    """timm's pretrained config of the model (its default tag when none is given), or None."""
    from timm.models import get_pretrained_cfg

    if tag:
        return get_pretrained_cfg(f"{arch}.{tag}", allow_unregistered=False)
    return get_pretrained_cfg(arch, allow_unregistered=False)


def check_name(name: str) -> tuple[str, str]:
    """(model, tag) of a `timm:` name timm knows; a ConfigError that says how to find one otherwise."""
    timm = _timm()
    arch, tag = split_name(name)
    if not arch or not re.fullmatch(r"[A-Za-z0-9_\-]+", arch) or (tag and not re.fullmatch(r"[A-Za-z0-9_\-]+", tag)):
        raise ConfigError(f"{name!r} is not a timm model name: write {PREFIX}<model>[.<tag>], "
                          f"e.g. {PREFIX}convnext_nano.in12k_ft_in1k.")
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:5]
        raise ConfigError(f"timm has no model {arch!r}" + (f" (close: {', '.join(close)})" if close else "")
                          + f". `python -m core backbones --all {arch[:6]}` lists the pretrained ones.")
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        raise ConfigError(f"timm's {arch} has no pretrained tag {tag!r}: "
                          + (f"use one of {', '.join(tags)}." if tags else "it has no pretrained weights; "
                             f"name it {PREFIX}{arch} and train it from scratch."))
    return arch, tag


def _fixed_size(cfg) -> bool:
    """The model is built for one input size (a ViT's position embedding, Swin's windows): build it at the run's."""
    return bool(cfg is not None and cfg.fixed_input_size)


def _builder(arch: str, tag: str, fixed: bool):
    full = f"{arch}.{tag}" if tag else arch

    def build_timm(num_classes: int, image_size: int) -> nn.Module:
        kw = {"img_size": image_size} if fixed else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _timm().create_model(full, pretrained=False, **kw)
        model.reset_classifier(num_classes)
        return model

    return build_timm


def _classifier_path(model: nn.Module) -> str:
    clf = model.get_classifier()
    for name, module in model.named_modules():
        if module is clf and name:
            return name
    raise ConfigError(f"{type(model).__name__}: its classifier is not a submodule this app can replace.")


def _cover(names: list[str], owner: dict[str, str], group: str) -> tuple[str, ...]:
    """The fewest module (or parameter) paths whose parameters all belong to
    `group` and together are exactly its parameters, in forward order."""
    under: dict[str, set[str]] = defaultdict(set)  # path prefix -> groups of the parameters below it
    for pname, g in owner.items():
        parts = pname.split(".")
        for i in range(1, len(parts) + 1):
            under[".".join(parts[:i])].add(g)
    paths: list[str] = []
    for pname in names:
        parts = pname.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if under[prefix] == {group}:
                if prefix not in paths:
                    paths.append(prefix)
                break
    return tuple(paths)


def _matched(matcher, pname: str) -> bool:
    """Whether timm's coarse matcher names this parameter (else timm files it under its last ordinal)."""
    if not isinstance(matcher, dict):
        return True
    for entry in matcher.values():
        for sub in (entry if isinstance(entry, (list, tuple)) else [entry]):
            regex = sub[0] if isinstance(sub, (list, tuple)) else sub
            if regex and re.match(regex, pname):
                return True
    return False


def derive_groups(model: nn.Module, head: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Layer groups of a timm model: timm's coarse groups in its order (the
    first is the stem, then the stages), then what its matcher leaves out: the
    classifier as "head", anything else (a head's norm) as "neck"."""
    from timm.models._manipulate import group_with_matcher

    matcher = model.group_matcher(coarse=True)
    order = group_with_matcher(model.named_parameters(), matcher, reverse=True)
    names = [n for n, _ in model.named_parameters()]
    in_head = {n for n in names if n.startswith(head + ".")}
    neck = {n for n in names if n not in in_head and not _matched(matcher, n)}
    ids = sorted({order[n] for n in names if n not in in_head and n not in neck})
    label = {i: STEM if k == 0 else f"stage{k}" for k, i in enumerate(ids)}
    owner = {n: HEAD if n in in_head else NECK if n in neck else label[order[n]] for n in names}
    groups = [label[i] for i in ids] + ([NECK] if neck else [])
    out = [(g, _cover([n for n in names if owner[n] == g], owner, g)) for g in groups]
    return (*out, (HEAD, (head,)))


def _cam_layout(model: nn.Module) -> tuple[str, int]:
    if hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed") and not hasattr(model, "layers"):
        return "tokens", int(model.num_prefix_tokens)
    fmt = str(getattr(model, "output_fmt", "NCHW"))
    return ("NHWC" if fmt.upper() == "NHWC" else "NCHW"), 0


def _size_rule(model: nn.Module) -> tuple[int, int]:
    """(multiple, minimum) of the image sizes the model takes."""
    multiple = 1
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is not None:
        multiple = int(max(patch) if isinstance(patch, (tuple, list)) else patch)
    reduction = 1
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, (list, tuple)) else None
        reduction = int(last.get("reduction", 1)) if isinstance(last, dict) else 1
    return multiple, max(16, multiple, reduction)


def _gradcam_layer(model: nn.Module, layout: str) -> str:
    """The last feature_info entry; for a ViT, that block's input norm: a
    class-token head reads the patch tokens only through the last block's
    attention, so the block's own output gets no gradient at the patches."""
    info = getattr(model, "feature_info", None)
    if not (isinstance(info, (list, tuple)) and info and isinstance(info[-1], dict)):
        return ""
    layer = str(info[-1].get("module", ""))
    if layout == "tokens" and isinstance(getattr(model.get_submodule(layer), "norm1", None), nn.Module):
        return f"{layer}.norm1"
    return layer


@functools.lru_cache(maxsize=64)
def spec(name: str) -> BackboneSpec:
    """The registry entry of a `timm:` name, derived from the model (built once on the meta device)."""
    name = name.strip()
    arch, tag = check_name(name)
    timm = _timm()
    cfg = _pretrained_cfg(arch, tag)
    fixed = _fixed_size(cfg)
    builder = _builder(arch, tag, fixed)
    with torch.device("meta"):
        model = builder(1000, cfg.input_size[-1] if fixed and cfg is not None else 224)
    head = _classifier_path(model)
    if not isinstance(model.get_submodule(head), nn.Linear):
        raise ConfigError(f"{name}: its classifier is a {type(model.get_submodule(head)).__name__}, not a Linear "
                          "layer; this app replaces Linear heads only. Pick another model.")
    data_cfg = timm.data.resolve_model_data_config(model)
    layout, prefix = _cam_layout(model)
    multiple, minimum = _size_rule(model)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    full = f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else arch
    params = sum(p.numel() for p in model.parameters())
    norms = "BatchNorm" if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else "no BatchNorm"
    size_note = f" Image size: a multiple of {multiple} px, at least {minimum}." if multiple > 1 else f" Image size: at least {minimum} px."
    return BackboneSpec(
        name=name,
        title=full,
        family="timm",
        groups=derive_groups(model, head),
        head=head,
        gradcam_layer=_gradcam_layer(model, layout),
        input_size=int(data_cfg["input_size"][-1]),
        mean=tuple(float(v) for v in data_cfg["mean"]),
        std=tuple(float(v) for v in data_cfg["std"]),
        weights=f"hf:{hub_id}" if hub_id else None,
        description=(f"timm {full}: {params / 1e6:.1f}M params (ImageNet head), {norms}; pretrained at "
                     f"{data_cfg['input_size'][-1]} px, {data_cfg['interpolation']} resize." + size_note),
        builder=builder,
        cam_layout=layout,
        prefix_tokens=prefix,
        size_multiple=multiple,
        min_size=minimum,
    )


# --- the catalogue ----------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def param_count(name: str) -> int:
    """Parameters of a catalogue model with its ImageNet head, counted on the meta device."""
    arch, tag = split_name(name)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _timm().create_model(arch, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def weights_where(name: str) -> str:
    """'cached' (in the hub cache), 'download' (needs the network) or 'none' (timm has no file for it)."""
    arch, tag = split_name(name)
    cfg = _pretrained_cfg(arch, tag)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return "none"
    return "cached" if hub.cached_file(repo) is not None else "download"


def catalogue(text: str = "", limit: int | None = None, params: bool = False) -> list[dict]:
    """timm's pretrained models whose name contains `text` (case-insensitive;
    `*` and `?` work as wildcards), as {name, weights[, params]} rows, cached
    ones first, then by name. `params` builds each on the meta device (~0.2 s
    a model): ask for it on a short list."""
    text = text.strip().lower().removeprefix(PREFIX)
    pattern = text if any(c in text for c in "*?") else f"*{text}*"
    names = _timm().list_pretrained(pattern or "*")
    rows = [{"name": PREFIX + n, "weights": weights_where(n)} for n in names]
    rows.sort(key=lambda r: (r["weights"] != "cached", r["name"]))
    rows = rows[:limit] if limit is not None else rows
    if params:
        for r in rows:
            r["params"] = param_count(r["name"])
    return rows
