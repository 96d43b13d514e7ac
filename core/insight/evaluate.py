"""A trained run on its own test split: the confusion matrix, the images in
each cell, the top losses, and precision / recall / F1 per class.

    ev = evaluate_run(run_dir)                 # one pass over the run's test split
    cm = ev.confusion()                        # rows: true class, columns: predicted
    per_class_metrics(cm, ev.class_names)      # list of dicts
    ev.cell(true=3, predicted=8)               # indices of those images (ev.x[i])
    ev.top_losses(12)                          # the most confidently wrong first
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics

from core.insight import predict
from core.train import data
from core.train.calibration import confusion_matrix  # noqa: F401  (one function for runs and Compare)
from core.train.checkpoint import LoadedModel, load_run_model

BATCH = 256


@dataclass
class Evaluation:
    class_names: list[str]
    x: torch.Tensor  # uint8 (N, C, S, S): the images, to show them
    y: np.ndarray  # (N,) true class
    probs: np.ndarray  # (N, K) float32 softmax probabilities

    def __len__(self) -> int:
        return len(self.y)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def losses(self) -> np.ndarray:
        """Cross-entropy of each image: -log p(true class)."""
        p = self.probs[np.arange(len(self.y)), self.y]
        return -np.log(np.clip(p, 1e-12, 1.0))

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.y).mean()) if len(self.y) else 0.0

    @property
    def balanced_accuracy(self) -> float:
        """The mean of per-class recall (scikit-learn's), over the classes present."""
        from core.train.calibration import balanced_accuracy

        return balanced_accuracy(torch.from_numpy(self.predicted), torch.from_numpy(self.y))

    def confusion(self, normalise: bool = False) -> np.ndarray:
        cm = confusion_matrix(self.y, self.predicted, len(self.class_names))
        return normalise_rows(cm) if normalise else cm

    def cell(self, true: int, predicted: int) -> np.ndarray:
        """Indices of the images of class `true` predicted as `predicted`,
        the most confident first."""
        idx = np.nonzero((self.y == true) & (self.predicted == predicted))[0]
        return idx[np.argsort(-self.probs[idx, predicted], kind="stable")]

    def top_losses(self, k: int = 12, wrong_only: bool = True) -> np.ndarray:
        """Indices of the k images with the highest loss (the model most
        confidently wrong first); only misclassified ones by default."""
        idx = np.arange(len(self.y))
        if wrong_only:
            idx = idx[self.predicted != self.y]
        return idx[np.argsort(-self.losses[idx], kind="stable")][:k]


def normalise_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (recall on the diagonal); empty rows stay 0."""
    totals = cm.sum(1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)


def per_class_metrics(cm: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix,
    by scikit-learn (zero_division=0: a class never predicted has precision 0).
    Each cell (true t, predicted p) is one weighted (t, p) pair, so the counts
    are exactly the matrix's."""
    k = len(class_names)
    if cm.sum() == 0:  # no images: scikit-learn refuses all-zero weights
        zeros = np.zeros(k)
        precision, recall, f1, support = zeros, zeros, zeros, np.zeros(k, dtype=np.int64)
    else:
        precision, recall, f1, support = metrics.precision_recall_fscore_support(
            np.repeat(np.arange(k), k), np.tile(np.arange(k), k), labels=np.arange(k),
            sample_weight=np.asarray(cm).ravel(), zero_division=0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]


@torch.inference_mode()
def evaluate(loaded: LoadedModel, split: data.Split, tta: bool = False) -> Evaluation:
    """The model's probabilities for every image of a split (`tta`: averaged
    with each image's mirror image)."""
    probs = [predict.probabilities(loaded, split.x[i : i + BATCH], tta=tta) for i in range(0, len(split), BATCH)]
    p = torch.cat(probs).numpy() if probs else np.zeros((0, loaded.num_classes), dtype=np.float32)
    return Evaluation(list(loaded.class_names), split.x, split.y.cpu().numpy(), p)


def evaluate_run(run: str | Path | LoadedModel, which: str = "test", tta: bool = False) -> Evaluation:
    """A run (folder, checkpoint or loaded model) on its own split, cut as its
    trainer cut it."""
    loaded = run if isinstance(run, LoadedModel) else load_run_model(run)
    return evaluate(loaded, data.run_split(loaded.config, which), tta)
