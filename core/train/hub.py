"""Weights of a `timm:` backbone: timm's own Hugging Face hub cache
(`$HF_HOME/hub`, or `$HF_HUB_CACHE`), a download into it where a network is
there, or a file the user names.

The file is read as data only (safetensors, or `torch.load(weights_only=True)`
for `pytorch_model.bin`), then handed to timm's own loader
(`create_model(pretrained=True)` with the state dict as its source), so each
model family's checkpoint filter runs (a ViT's position embedding resampled
to the run's patch grid, Swin's relative-position tables resized) and the
load is strict: a file for another architecture is refused, never a silent
random start. The source's classifier is never loaded: each run trains a new head.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from core.errors import WeightsUnavailable

log = logging.getLogger(__name__)

FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hub repository, in that order


def cache_dir() -> Path:
    """The hub cache huggingface_hub and timm use, read from the environment now (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def repo_id(spec) -> str:
    return spec.weights.removeprefix("hf:")


def repo_folder(repo: str) -> Path:
    return cache_dir() / f"models--{repo.replace('/', '--')}"


def expected_file(spec) -> Path:
    """Where a person puts the file by hand so that it counts as cached."""
    return repo_folder(repo_id(spec)) / "snapshots" / "main" / FILES[0]


def cached_file(repo: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in FILES:
        found = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir()))
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def availability(spec) -> str:
    """'cached' or 'download' (needs the network)."""
    return "cached" if cached_file(repo_id(spec)) is not None else "download"


def _reachable(timeout: float = 3.0) -> str:
    """'' when the hub answers a connection, else why not. huggingface_hub
    retries an unreachable host five times with back-off (about 20 s per
    file): offline, one quick look says so at once."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as e:
        return f"no network: {type(e).__name__}"
    return ""


def _download(spec) -> Path:
    from huggingface_hub import hf_hub_download

    repo = repo_id(spec)
    errors = [why] if (why := _reachable()) else []
    for name in FILES if not errors else ():
        try:
            return Path(hf_hub_download(repo, name, cache_dir=str(cache_dir())))
        except Exception as e:  # not found, refused: the next name, then one message
            errors.append(type(e).__name__)
    where = expected_file(spec)
    raise WeightsUnavailable(
        f"{spec.name}: its pretrained weights are not in the Hugging Face cache {cache_dir()} and could not be "
        f"downloaded ({errors[0]}). Put the file {FILES[0]} of the hub repository {repo} at {where} "
        f"(set HF_HOME to use another cache), or pass a weights file (--weights PATH), or use the "
        "'scratch' strategy.")


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise WeightsUnavailable(f"Could not read weights file {path} ({type(e).__name__}): it is not a "
                                     "complete safetensors file. Delete it and download it again.") from None
    from core.train.state_files import read_state_dict  # the checks every user file gets

    return read_state_dict(path)


def _timm_state(spec, state: dict[str, torch.Tensor], image_size: int, source: str) -> dict[str, torch.Tensor]:
    """The state dict as timm's own loader makes it for this model (its family's
    filter applied, strict), without the source's classifier."""
    import timm
    from timm.models import get_pretrained_cfg

    full = spec.name.removeprefix("timm:").strip()  # model[.tag]
    cfg = get_pretrained_cfg(full)
    heads = cfg.classifier if cfg is not None and cfg.classifier else ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    drop = tuple(h + "." for h in (*heads, spec.head))
    body = {k.removeprefix("module."): v for k, v in state.items()}
    body = {k: v for k, v in body.items() if not k.startswith(drop)}
    if cfg is None:  # no pretrained config (a model timm has no weights for): the file as it is, checked by `assign`
        return body
    kw = {"img_size": image_size} if cfg.fixed_input_size else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            donor = timm.create_model(full, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(
                state_dict=body, num_classes=0, source="", file=None), **kw)
    except (RuntimeError, KeyError, ValueError, AssertionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:240]
        raise WeightsUnavailable(f"{source} does not fit {spec.name} ({first}). Is it for another architecture?") from None
    return donor.state_dict()


def load_into(spec, model: nn.Module, state: dict[str, torch.Tensor], image_size: int, source: str) -> None:
    from core.train.state_files import assign

    assign(spec, model, _timm_state(spec, state, image_size, source), source)


def image_size_of(model: nn.Module, fallback: int) -> int:
    """The size a fixed-size timm model was built for (its patch grid), else `fallback`."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return int(size[0]) if isinstance(size, (tuple, list)) else int(size or fallback)


def load_pretrained(spec, model: nn.Module) -> str:
    """Fill `model` from the hub cache, downloading first where it can; returns 'cached' or 'download'."""
    path = cached_file(repo_id(spec))
    how = "cached"
    if path is None:
        log.info("downloading %s weights from the hub repository %s", spec.name, repo_id(spec))
        path, how = _download(spec), "download"
    load_into(spec, model, _read(path), image_size_of(model, spec.input_size), f"{how} file {path.name}")
    return how


def load_file(spec, model: nn.Module, path: Path) -> str:
    load_into(spec, model, _read(path), image_size_of(model, spec.input_size), f"weights file {path.name}")
    return "file"
