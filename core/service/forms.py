"""What a config means before anything trains: built from a mapping, checked
once, its layer plan previewed, the weights file it names checked, the folder
of images it names described."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from core import paths
from core.errors import TLabError
from core.train import backbones, data, distributed, strategies, weights
from core.train.config import RunConfig
from core.train.device import channels_last_of, precision_of, resolve_device
from core.train.strategies import LayerPlan
from core.train.validate import check_image_size, validate


def config_from(values: Mapping[str, object]) -> RunConfig:
    """A RunConfig from a mapping of its fields (a page's form, the CLI's
    options); a value of None means the field's default. Not checked here:
    `checked` does that, once, at the entry point."""
    return RunConfig.from_dict({k: v for k, v in values.items() if v is not None})


def checked(cfg: RunConfig) -> RunConfig:
    """The config checked against the registries (backbone, strategy, dataset,
    weights to transfer) and its own ranges; a ConfigError says what to change."""
    return validate(cfg)


@dataclass
class PlanPreview:
    """A config's layer plan, built on the meta device (shapes, no weights, no memory)."""

    cfg: RunConfig
    spec: backbones.BackboneSpec
    model: torch.nn.Module = field(repr=False)
    plan: LayerPlan

    @property
    def norm_note(self) -> str:
        """What freezing means for the model's normalisation layers, when it has no BatchNorm."""
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            return ""
        return (f"{self.spec.title} has no BatchNorm (it normalises with LayerNorm or GroupNorm): a frozen group "
                "has no running statistics to keep, its weights are simply not updated.")

    def thaw(self) -> list[tuple[int, int]]:
        """(epoch, trainable parameters) at the first epoch and at every epoch where the plan changes."""
        return [(e + 1, strategies.make_plan(self.spec, self.model, self.cfg, e).trainable_params)
                for e in [0, *strategies.change_epochs(self.cfg, self.cfg.epochs)]]


def preview_plan(cfg: RunConfig, num_classes: int = 10, epoch: int = 1) -> PlanPreview:
    """Which layers the config trains at `epoch` (1-based), with their groups and LRs. Raises TLabError."""
    spec = backbones.get(cfg.backbone)
    with torch.device("meta"):  # a plan needs shapes, not weights or memory
        model = backbones.build(spec, num_classes, cfg.image_size)
    return PlanPreview(cfg, spec, model, strategies.make_plan(spec, model, cfg, epoch - 1))


@dataclass
class CatalogueMatches:
    rows: list[dict]  # {name, params, weights}, the first `limit` matches, cached ones first
    total: int  # how many names match in all


def search_backbones(query: str, limit: int = 12) -> CatalogueMatches:
    """timm's pretrained models whose name contains `query`, with parameter
    counts (built on the meta device, remembered) and where their weights are.
    An empty query matches nothing: the catalogue has ~1,800 names."""
    from core.train import timm_zoo

    if not query.strip():
        return CatalogueMatches([], 0)
    rows = timm_zoo.catalogue(query)
    shown = [{"name": r["name"], "params": timm_zoo.param_count(r["name"]), "weights": r["weights"]}
             for r in rows[:limit]]
    return CatalogueMatches(shown, len(rows))


def image_size_problem(backbone: str, size: int) -> str:
    """'' when the backbone takes `size` px images, else the message naming the nearest allowed size."""
    try:
        check_image_size(backbones.get(backbone), int(size))
    except TLabError as e:
        return str(e)
    return ""


def check_weights_file(backbone: str, name: str, content: bytes) -> str:
    """Keep an uploaded weights file in the data folder if it fits the
    backbone; returns its path for `RunConfig.weights`. Raises TLabError
    saying why it does not fit."""
    path = paths.save_upload("weights", name, content)
    spec = backbones.get(backbone)
    with torch.device("meta"):
        probe = backbones.build(spec, 10, 32)
    weights.load_file(spec, probe.to_empty(device="cpu"), path)
    return str(path)


@dataclass
class Hardware:
    cuda: bool
    gpus: int

    @property
    def detected(self) -> str:
        return "CUDA GPU" if self.cuda else "CPU only"


def precision_defaults(device_name: str) -> tuple[str, bool]:
    """What precision "auto" and the default layout mean for a device choice
    on this machine: (fp32 | bf16 | fp16, channels_last)."""
    try:
        device = resolve_device(device_name)
    except TLabError:  # a device this machine lacks: what auto means on one that has it
        return ("bf16", True) if device_name == "cuda" else ("fp32", False)
    auto = RunConfig()
    return precision_of(auto, device), channels_last_of(auto, device)


def hardware() -> Hardware:
    """What this machine trains on, for the form's device and process fields."""
    return Hardware(torch.cuda.is_available(), distributed.detected_gpus())


IMBALANCE_WARN = 3.0  # largest class over smallest above this: the preview and `datasets --describe` warn


@dataclass
class FolderPreview:
    images: int
    class_names: list[str]
    counts: list[int]
    skipped: int
    skipped_example: str
    samples: list[list[np.ndarray]]  # per class (at most `classes`), a few HxWx3 images
    layout: str = "class folders: split by the run's seed and fractions"

    @property
    def imbalance(self) -> float:
        """The largest class's count over the smallest's (1: balanced)."""
        return max(self.counts) / max(1, min(self.counts)) if self.counts else 1.0

    @property
    def warning(self) -> str:
        """What to do about classes more than IMBALANCE_WARN times apart, or ''."""
        if self.imbalance <= IMBALANCE_WARN:
            return ""
        big = self.class_names[int(np.argmax(self.counts))]
        small = self.class_names[int(np.argmin(self.counts))]
        return (f"Imbalanced: {big!r} has {self.imbalance:.1f}x the images of {small!r}. A model can score well by "
                "mostly predicting the big classes: try class weights 'auto' or the balanced sampler, and judge it "
                "by balanced accuracy and per-class recall.")


def preview_folder(dataset: str, classes: int = 12, per_class: int = 8, size: int = 64) -> FolderPreview:
    """A user's folder or ZIP of class folders: how many images per class (by
    listing the files) and a few of each (only those decoded, at reduced
    scale): a second or two for tens of thousands of photos. Unreadable files
    met among the samples are counted; the full decode finds the rest.
    Raises TLabError for a folder that can't be used."""
    path = data.folder_path(dataset)
    listing = data.list_folder(path)
    counts = listing.counts
    data.check_classes(path, counts)
    samples, bad = [], []
    for files in list(listing.classes.values())[:classes]:
        shown = []
        for name, read in files[: per_class * 4]:  # a few broken files don't leave a class without samples
            if len(shown) == per_class:
                break
            try:
                shown.append(data.decode_image(read(), size).transpose(1, 2, 0))
            except Exception as e:  # PIL raises many types for broken files
                bad.append(f"{name} ({type(e).__name__})")
        samples.append(shown)
    layout = FolderPreview.layout
    if listing.split is not None:
        per = np.bincount(np.asarray(listing.split, dtype=np.int64), minlength=3)
        layout = ("train/, val/ and test/ folders, used as given: " + ", ".join(
            f"{n} {s}" if n else f"no {s} folder (cut from train)" for s, n in zip(("train", "val", "test"), per)))
    examples = bad + listing.examples
    return FolderPreview(sum(counts.values()), list(counts), list(counts.values()), listing.skipped + len(bad),
                         examples[0] if examples else "", samples, layout)


@dataclass
class FolderState:
    """Where a folder's images stand for a run at one image size."""

    state: str  # "decoded" (the cache holds them), "stream" (too many for memory: read each epoch), "todo"
    images: int
    message: str


def folder_state(dataset: str, size: int, images: int | None = None) -> FolderState:
    """Whether a run at `size` px starts from decoded images, decodes them
    first, or streams them from the files (`images`: the files' count when the
    caller has it, else listed here). Raises TLabError."""
    path = data.folder_path(dataset)
    n = sum(data.list_folder(path).counts.values()) if images is None else images
    if n * 3 * size * size > data.IN_MEMORY_MB.value() * 2**20:
        return FolderState("stream", n, f"{n:,} images at {size} px pass {data.IN_MEMORY_MB.describe()}: runs read "
                                        "them from the files every epoch, on every core.")
    if data.decoded(dataset, size):
        return FolderState("decoded", n, f"Decoded at {size} px: runs start from the data folder's copy.")
    return FolderState("todo", n, f"Not decoded at {size} px yet: the first run decodes the {n:,} images once "
                                  "(on every core) and every later run reuses them. Decode them now to watch it.")


@dataclass
class AugmentPreview:
    originals: list[np.ndarray]  # HxWx3 uint8: training images as stored
    drawn: list[np.ndarray]  # the same images as the model sees them with the config's augmentation
    what: str  # the policy in words


def preview_augmentation(cfg: RunConfig, draw: int = 0, n: int = 8) -> AugmentPreview:
    """The first `n` training images of a config's split, and one draw (`draw`
    picks it; the same number gives the same picture) of its augmentation, run
    by the same code the trainer runs. Raises TLabError for data that can't load."""
    bundle = data.load(cfg.dataset, cfg.image_size, cfg.seed, cfg.labels_per_class, cfg.val_fraction, cfg.test_fraction)
    source = data.Batches(bundle.train, n, torch.device("cpu"), workers=0)
    x, y, _ = next(source(torch.arange(min(n, len(bundle.train)))))
    unit = data.to_unit(x)
    policy = data.policy_of(cfg)
    seen = unit if policy is None else data.Augmenter(policy, cfg.image_size)(unit, cfg.seed * 1_000_003 + draw, y)[0]

    def pictures(t: torch.Tensor) -> list[np.ndarray]:
        return [a for a in (t * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()]

    return AugmentPreview(pictures(unit), pictures(seen), data.describe(policy))
