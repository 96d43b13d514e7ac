"""How far a model's confidence can be trusted, and temperature scaling
(Guo et al., ICML 2017): one scalar T, fitted on the validation split by
minimising the negative log-likelihood of softmax(logits / T), divides the
logits at prediction time. It never changes which class wins, only how sure
the model says it is.

The expected calibration error (ECE) bins predictions by confidence (15 equal
bins) and averages |accuracy - confidence| weighted by each bin's share.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BINS = 15


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, steps: int = 200) -> float:
    """The temperature that minimises the NLL of (logits / T, y), T in [0.05, 20]."""
    logits, y = logits.detach().cpu().double().clone(), y.detach().cpu().clone()  # not inference tensors: a graph is needed
    if len(y) == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return min(20.0, max(0.05, t)) if math.isfinite(t) else 1.0


def reliability(probs: torch.Tensor, y: torch.Tensor, bins: int = BINS) -> list[dict]:
    """Per confidence bin: its range, mean confidence, accuracy and count (empty bins too)."""
    probs, y = probs.detach().float().cpu(), y.detach().cpu()
    conf, pred = probs.max(1) if len(y) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    right = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    which = torch.bucketize(conf, edges[1:-1], right=True)  # confidence 1.0 falls in the last bin
    rows = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": n,
                     "confidence": float(conf[m].mean()) if n else None,
                     "accuracy": float(right[m].mean()) if n else None})
    return rows


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = BINS) -> float:
    rows = reliability(probs, y, bins)
    total = sum(r["count"] for r in rows)
    if not total:
        return 0.0
    return sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"])


def calibrate(val_logits: torch.Tensor, val_y: torch.Tensor, test_logits: torch.Tensor, test_y: torch.Tensor) -> dict:
    """T fitted on validation; the test split's ECE and reliability before and after."""
    t = fit_temperature(val_logits, val_y)
    before = torch.softmax(test_logits.float(), 1)
    after = torch.softmax(test_logits.float() / t, 1)
    return {"temperature": t, "ece": ece(before, test_y), "ece_calibrated": ece(after, test_y),
            "reliability": {"before": reliability(before, test_y), "after": reliability(after, test_y)}}


# The two metrics every run scores are scikit-learn's definitions, computed here with a bincount:
# importing sklearn.metrics (scipy with it) cost every run process 1.75 s of CPU (python -X importtime,
# idle 2-core machine), more than a small run's whole scoring. tests/train/test_calibration.py checks
# both against scikit-learn's own on random and edge-case labels.


def confusion_matrix(y_true, y_pred, num_classes: int):
    """Counts (K, K), int64 numpy: row = true class, column = predicted class (scikit-learn's
    confusion_matrix with labels=range(K): a pair with a label outside 0..K-1 is not counted)."""
    import numpy as np

    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    return np.bincount(t[keep] * num_classes + p[keep], minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """The mean of per-class recall over the classes present in y (scikit-learn's balanced_accuracy_score:
    a class predicted but absent from y has no recall and is left out)."""
    if len(y) == 0:
        return 0.0
    y, pred = y.detach().cpu().long(), pred.detach().cpu().long()
    k = int(max(int(y.max()), int(pred.max()))) + 1
    cm = confusion_matrix(y.numpy(), pred.numpy(), k)
    support = cm.sum(1)
    present = support > 0
    return float((cm.diagonal()[present] / support[present]).mean())
