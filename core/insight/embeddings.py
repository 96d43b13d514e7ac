"""Embeddings: what a model's penultimate layer makes of a set of images, and
a 2-D picture of it.

    x = data.run_split(loaded.config, "test")            # the run's own test split
    feats = extract(loaded.model, loaded.spec, x.x)      # (N, D) float32, CPU
    xy = project(feats, "tsne", seed=0)                  # (N, 2) numpy

`extract` removes the backbone's head for the forward pass (the features are
what the classifier sees), feeds images normalised exactly as in training and
puts the model back as it found it. `initial_model` rebuilds the weights a run
started from (pretrained backbone or its seeded random init), so "before
training" and "after training" are the same network at two moments.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError
from core.train import backbones, data, strategies
from core.train.backbones import BackboneSpec
from core.train.config import RunConfig

log = logging.getLogger(__name__)

METHODS = ("pca", "tsne")
BATCH = 256


@torch.inference_mode()
def extract(model: nn.Module, spec: BackboneSpec, x: torch.Tensor, batch_size: int = BATCH,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """Penultimate features (N, D) float32 on the CPU for uint8 images
    (N, C, S, S) at the model's image size. The model is run in eval mode on
    `device` and left in the mode and on the device it came in."""
    from core.train.backbones import head_removed

    was_training = model.training
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    model.to(device).eval()
    out = []
    try:
        with head_removed(model, spec.head):
            for i in range(0, len(x), batch_size):
                xb = data.batch_input(x[i : i + batch_size].to(device), spec.mean, spec.std)
                out.append(model(xb).float().flatten(1).cpu())
    finally:
        model.to(home).train(was_training)
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)


def initial_model(config: dict, num_classes: int) -> nn.Module:
    """The network a run started from, rebuilt: its pretrained backbone (or
    weights file) for a transfer strategy, its seeded random init for scratch.
    The engine seeds torch with the run's seed just before building it; so
    does this, without touching the caller's random state. Raises
    WeightsUnavailable when the pretrained weights can't be had here."""
    spec = backbones.get(str(config["backbone"]))
    pretrained = strategies.get(str(config.get("strategy", RunConfig().strategy))).pretrained
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.get("seed", 0)))
        model = backbones.create_model(spec, num_classes, int(config["image_size"]), pretrained, config.get("weights"))
    return model.eval()


def subsample(y: torch.Tensor, max_points: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of at most `max_points` items, every class kept in
    proportion (t-SNE over tens of thousands of points takes minutes)."""
    n = len(y)
    if n <= max_points:
        return torch.arange(n)
    frac = max_points / n
    (idx,) = data.stratified_split(y, (frac,), seed)[:1]
    return idx[:max_points]


def project(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) float32 coordinates.

    "pca": the two directions of largest variance (deterministic, instant).
    "tsne": scikit-learn's t-SNE (neighbourhoods kept, distances between
    clusters not meaningful), on the top 50 principal components, perplexity
    capped for small N; seeded."""
    if method not in METHODS:
        raise ConfigError(f"Unknown projection {method!r}: use one of {', '.join(METHODS)}.")
    f = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    f = f.astype(np.float64, copy=False).reshape(len(f), -1)
    n = len(f)
    if n < 3:
        raise ConfigError(f"A 2-D projection needs at least 3 points (got {n}).")
    if not np.isfinite(f).all():
        raise ConfigError("The features hold NaN or infinite values (the model diverged?): nothing to project.")
    from sklearn.decomposition import PCA

    if method == "pca":
        k = min(2, f.shape[1])
        xy = PCA(n_components=k, random_state=seed).fit_transform(f)
        if k < 2:
            xy = np.concatenate([xy, np.zeros((n, 2 - k))], axis=1)
        return xy.astype(np.float32)
    from sklearn.manifold import TSNE

    k = min(50, f.shape[1], n)
    reduced = PCA(n_components=k, random_state=seed).fit_transform(f) if f.shape[1] > k else f
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto")
    from threadpoolctl import threadpool_limits

    # A few thousand points take seconds on one thread; OpenMP threads on a busy
    # machine (a dashboard beside training) spin and wait far longer than that.
    with threadpool_limits(limits=1 if n <= 3000 else None):
        return tsne.fit_transform(reduced).astype(np.float32)


def separation(features: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """How well classes separate in a feature space: leave-one-out accuracy of
    the nearest class centroid (cosine, features centred), in [0, 1]. A number
    to put beside the picture: fine-tuning should raise it."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64).reshape(len(features), -1)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    f = torch.nn.functional.normalize(f - f.mean(0), dim=1)
    classes, pos = torch.unique(y, return_inverse=True)
    sums = torch.zeros(len(classes), f.shape[1], dtype=f.dtype).index_add_(0, pos, f)
    counts = torch.bincount(pos, minlength=len(classes))
    dots = f @ sums.T  # (N, K)
    sims = dots / sums.norm(dim=1).clamp(min=1e-12)
    # Leave-one-out: a point's own class centroid without it is S - f, |f| = 1.
    own_dot = dots.gather(1, pos[:, None])[:, 0]
    own_norm = (sums.norm(dim=1)[pos].square() - 2 * own_dot + 1).clamp(min=0).sqrt()
    own = torch.where(counts[pos] > 1, (own_dot - 1) / own_norm.clamp(min=1e-12), torch.full_like(own_dot, -torch.inf))
    sims.scatter_(1, pos[:, None], own[:, None])
    return float((sims.argmax(1) == pos).double().mean())
