"""Domain adaptation: a finished run meets a new domain whose labels it never sees.

- AdaBN (Li et al. 2016): keep every weight, recompute each BatchNorm layer's
  running mean and variance on the target images. Seconds, no training.
- DANN (Ganin & Lempitsky 2015): a domain classifier on the penultimate
  features, behind a gradient-reversal layer, learns to tell source from target
  while the backbone learns to make them indistinguishable; the label loss on
  the labelled source keeps the features useful. Target labels are never used.

Targets: a registered dataset (its training split's images are the unlabelled
target; its test split, with labels, only scores), e.g. the built-in
`digits_shifted`, or `folder:PATH` of images with no labels at all (then no
score, only predictions and the embedding view).

Each adaptation is saved as JSON in the run's folder (`adaptations/`), so the
app shows it again after a reload.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import paths
from core.errors import ConfigError
from core.lessons.advisor import batchnorm_layers
from core.lessons import ADAPT_METHODS as METHODS, DANN_STEPS  # noqa: F401  (defined torch-free, for the CLI)
from core.train import data
from core.train.checkpoint import LoadedModel, load_run_model

log = logging.getLogger(__name__)

DANN_BATCH = 32
EMBED_POINTS = 300  # per domain in the embedding view
EVAL_BATCH = 256
ADAPT_BATCH = 256


# --- the gradient-reversal layer ---------------------------------------------------


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -lambd on the way back."""
    return _GradReverse.apply(x, lambd)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin's schedule: 0 at the start (the domain classifier's signal is noise
    then), rising to 1."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainClassifier(nn.Module):
    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, lambd: float) -> torch.Tensor:
        return self.net(grad_reverse(features, lambd)).squeeze(1)


# --- pieces ---------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    train_x: torch.Tensor  # unlabelled images the adaptation sees
    test_x: torch.Tensor  # images scored (with labels when there are any)
    test_y: torch.Tensor | None
    note: str = ""


def load_target(name: str, loaded: LoadedModel, seed: int) -> Target:
    size = loaded.image_size
    if name.startswith(data.FOLDER_PREFIX) or Path(name).expanduser().exists():
        x, _, bad = data.load_unlabelled(name, size)
        note = f"{len(x)} unlabelled images" + (f"; {bad} unreadable file(s) skipped" if bad else "")
        return Target(name, x, x, None, note)
    spec = data.get(name)
    bundle = data.load(spec.name, size, seed)
    if list(bundle.class_names) != list(loaded.class_names):
        return Target(name, bundle.train.x, bundle.test.x, None,
                      f"{spec.title}'s classes differ from the run's: no accuracy, predictions only")
    return Target(name, bundle.train.x, bundle.test.x, bundle.test.y)


def _inputs(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    return data.to_input(x, loaded.spec.mean, loaded.spec.std)


@torch.inference_mode()
def features_and_predictions(loaded: LoadedModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, D) and predicted classes (N,), in eval mode."""
    from core.train.backbones import head_removed

    model = loaded.model.eval()
    feats, preds = [], []
    with head_removed(model, loaded.spec.head) as head:
        for i in range(0, len(x), EVAL_BATCH):
            f = model(_inputs(loaded, x[i:i + EVAL_BATCH])).float().flatten(1)
            feats.append(f)
            preds.append(head(f).argmax(1))
    return torch.cat(feats), torch.cat(preds)


def accuracy(loaded: LoadedModel, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((features_and_predictions(loaded, x)[1] == y).double().mean())


@torch.no_grad()
def adabn(model: nn.Module, x_inputs: Callable[[int, int], torch.Tensor], n: int, batch_size: int = ADAPT_BATCH) -> int:
    """Recompute every BatchNorm layer's running statistics on n target images
    (x_inputs(i, j) gives model inputs for images i..j-1): a cumulative average
    over large batches. Weights are untouched. Returns the number of layers."""
    layers = [m for _, m in batchnorm_layers(model)]
    if not layers:
        raise ConfigError("This model has no BatchNorm layer: AdaBN has no statistics to recompute. Use DANN.")
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    try:
        for i in range(0, n, batch_size):
            if min(batch_size, n - i) < 2:
                break  # a one-image batch has no variance
            model(x_inputs(i, min(i + batch_size, n)))
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        model.eval()
    return len(layers)


def dann(loaded: LoadedModel, source_x: torch.Tensor, source_y: torch.Tensor, target_x: torch.Tensor,
         steps: int = DANN_STEPS, seed: int = 0, lr: float = 1e-4,
         on_step: Callable[[int, float, float], None] | None = None) -> list[dict]:
    """Train the run's model with a domain classifier behind gradient reversal.
    Returns per-step rows: step, label_loss, domain_loss, domain_accuracy, lambda."""
    from core.train.backbones import head_removed

    model = loaded.model
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    with head_removed(model, loaded.spec.head) as head:
        with torch.no_grad():
            dim = model.eval()(_inputs(loaded, source_x[:2])).flatten(1).shape[1]
        disc = DomainClassifier(dim)
        opt = torch.optim.AdamW([
            {"params": model.parameters(), "lr": lr},
            {"params": head.parameters(), "lr": lr},
            {"params": disc.parameters(), "lr": 10 * lr},
        ], weight_decay=1e-4)
        model.train()
        rows = []
        b = DANN_BATCH
        domain = torch.cat([torch.zeros(b), torch.ones(b)])
        for step in range(1, steps + 1):
            lambd = dann_lambda((step - 1) / max(1, steps - 1))
            si = torch.randint(len(source_y), (b,), generator=g)
            ti = torch.randint(len(target_x), (b,), generator=g)
            feats = model(_inputs(loaded, torch.cat([source_x[si], target_x[ti]]))).flatten(1)
            label_loss = F.cross_entropy(head(feats[:b]), source_y[si])
            logits = disc(feats, lambd)
            domain_loss = F.binary_cross_entropy_with_logits(logits, domain)
            opt.zero_grad(set_to_none=True)
            (label_loss + domain_loss).backward()
            opt.step()
            row = {"step": step, "label_loss": float(label_loss.detach()), "domain_loss": float(domain_loss.detach()),
                   "domain_accuracy": float(((logits.detach() > 0).float() == domain).float().mean()), "lambda": lambd}
            if not all(math.isfinite(v) for v in row.values()):
                raise ConfigError(f"DANN diverged at step {step}: lower the learning rate (it was {lr:g}).")
            rows.append(row)
            if on_step:
                on_step(step, row["label_loss"], row["domain_loss"])
    model.eval()
    return rows


def _project(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of each feature set (source and target points together)."""
    from core.insight.embeddings import project

    return project(before, "pca"), project(after, "pca")


def _sample(n: int, k: int, seed: int) -> torch.Tensor:
    if n <= k:
        return torch.arange(n)
    return torch.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]).values


def _gap(f: torch.Tensor, is_target: torch.Tensor) -> float:
    """Distance between the source and target feature centroids, in units of
    the spread within each domain (root mean squared distance of a point to
    its own domain's centroid): about 0 when the clouds overlap."""
    f = f.double()
    src, tgt = f[~is_target], f[is_target]
    within = torch.cat([src - src.mean(0), tgt - tgt.mean(0)]).square().sum(1).mean().sqrt().clamp(min=1e-12)
    return float((tgt.mean(0) - src.mean(0)).norm() / within)


# --- the whole adaptation ----------------------------------------------------------------


@dataclass
class AdaptResult:
    run_id: str
    method: str
    target: str
    source_accuracy: float | None
    target_before: float | None
    target_after: float | None
    seconds: float
    steps: int = 0
    target_images: int = 0
    note: str = ""
    gap_before: float | None = None
    gap_after: float | None = None
    predictions_before: dict = field(default_factory=dict)  # class name -> count on the scored target images
    predictions_after: dict = field(default_factory=dict)
    changed_predictions: int = 0
    curve: list = field(default_factory=list)  # DANN's per-step losses
    embedding: dict = field(default_factory=dict)  # before / after: x, y, domain (source | target)
    saved: str = ""

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("embedding")
        d.pop("curve")
        return d


def _counts(preds: torch.Tensor, names: list[str]) -> dict:
    c = torch.bincount(preds, minlength=len(names)).tolist()
    return {n: int(v) for n, v in zip(names, c)}


def adapt(run_id: str, target: str, method: str, steps: int = DANN_STEPS, seed: int = 0, lr: float = 1e-4,
          save: bool = True, on_step: Callable[[int, float, float], None] | None = None) -> AdaptResult:
    """Adapt a finished run's model to `target` with `method`; report source
    accuracy and target accuracy before and after (when the target has labels)."""
    if method not in METHODS:
        raise ConfigError(f"Unknown adaptation method {method!r}: use one of {', '.join(METHODS)}.")
    if method == "dann" and (not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"DANN needs at least 1 step (got {steps}).")
    t0 = time.perf_counter()
    run_dir = paths.run_dir(run_id)
    loaded = load_run_model(run_dir)
    cfg = loaded.config
    torch.manual_seed(seed)
    src = data.load(cfg.get("dataset", "digits"), loaded.image_size, int(cfg.get("seed", 0)),
                    cfg.get("labels_per_class"), cfg.get("val_fraction", 0.15), cfg.get("test_fraction", 0.15))
    if list(src.class_names) != list(loaded.class_names):
        raise ConfigError(f"Run {run_id}'s dataset {src.name} now has other classes than the run was trained on.")
    tgt = load_target(target, loaded, seed)

    s_idx = _sample(len(src.test), EMBED_POINTS, seed)
    t_idx = _sample(len(tgt.test_x), EMBED_POINTS, seed)

    def look(source_too: bool = True) -> tuple[float | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        tf, tp = features_and_predictions(loaded, tgt.test_x)
        if not source_too:
            return None, tp, tf[t_idx], None
        sf, sp = features_and_predictions(loaded, src.test.x)
        return float((sp == src.test.y).double().mean()), tp, tf[t_idx], sf[s_idx]

    source_before, preds_before, t_before, s_before = look()
    curve: list[dict] = []
    if method == "adabn":
        adabn(loaded.model, lambda i, j: _inputs(loaded, tgt.train_x[i:j]), len(tgt.train_x))
        # AdaBN's model is meant for the target: the source is scored with the source statistics.
        source_after = source_before
    else:
        curve = dann(loaded, src.train.x, src.train.y, tgt.train_x, steps, seed, lr, on_step)
        source_after = None
    # AdaBN's adapted model is the target's: each domain goes through its own statistics,
    # so the source keeps its features (and accuracy) from the original model.
    s_acc_after, preds_after, t_after, s_after = look(source_too=method != "adabn")
    source_after = source_after if source_after is not None else s_acc_after
    emb_before = torch.cat([s_before, t_before])
    emb_after = torch.cat([s_after if s_after is not None else s_before, t_after])

    names = loaded.class_names
    is_target = torch.cat([torch.zeros(len(s_idx), dtype=torch.bool), torch.ones(len(t_idx), dtype=torch.bool)])
    xy_before, xy_after = _project(emb_before.numpy(), emb_after.numpy())
    domain = ["target" if t else "source" for t in is_target.tolist()]
    labels = src.test.y[s_idx].tolist() + (tgt.test_y[t_idx].tolist() if tgt.test_y is not None else [-1] * len(t_idx))
    result = AdaptResult(
        run_id=run_id, method=method, target=target,
        source_accuracy=source_after,
        target_before=float((preds_before == tgt.test_y).double().mean()) if tgt.test_y is not None else None,
        target_after=float((preds_after == tgt.test_y).double().mean()) if tgt.test_y is not None else None,
        seconds=time.perf_counter() - t0, steps=len(curve), target_images=len(tgt.train_x), note=tgt.note,
        gap_before=_gap(emb_before, is_target), gap_after=_gap(emb_after, is_target),
        predictions_before=_counts(preds_before, names), predictions_after=_counts(preds_after, names),
        changed_predictions=int((preds_before != preds_after).sum()),
        curve=curve,
        embedding={"before": {"x": xy_before[:, 0].tolist(), "y": xy_before[:, 1].tolist()},
                   "after": {"x": xy_after[:, 0].tolist(), "y": xy_after[:, 1].tolist()},
                   "domain": domain, "label": [names[i] if i >= 0 else "" for i in labels]},
    )
    if method == "dann":
        result.note = "; ".join(filter(None, [result.note, f"source accuracy before DANN: {source_before:.4f}"]))
    if save:
        save_result(result)
    return result


def save_result(result: AdaptResult) -> Path:
    folder = paths.run_dir(result.run_id) / "adaptations"
    folder.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in Path(result.target.removeprefix(data.FOLDER_PREFIX)).name)[-40:]
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{result.method}-{slug}.json"
    result.saved = str(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(result)))
    tmp.replace(path)
    return path


def saved_results(run_id: str) -> list[dict]:
    """Adaptations saved for a run, newest first."""
    folder = paths.run_dir(run_id) / "adaptations"
    out = []
    for p in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out
