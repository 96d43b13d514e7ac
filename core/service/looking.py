"""What a trained run shows from inside, computed once for the Inspect page
and the `embed` command alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import TLabError
from core.insight import embeddings
from core.train import data
from core.train.checkpoint import LoadedModel


@dataclass
class Embedding:
    """Projected features of the same images at the start of training and after it."""

    method: str
    y: np.ndarray  # the images' labels
    # stage ("before", "after") -> (2-D points, class separation); "before" is None when
    # the starting weights can't be rebuilt here, and `before_error` says why
    stages: dict[str, tuple[np.ndarray, float] | None]
    before_error: str | None = None


def before_after(loaded: LoadedModel, split: str = "test", method: str = "pca", max_points: int = 2000) -> Embedding:
    """A run's `split` (subsampled, stratified, to `max_points`) through its
    penultimate layer at the start of training (pretrained or random weights,
    as the run began) and after it, projected to 2-D."""
    seed = int(loaded.config.get("seed", 0))
    images = data.run_split(loaded.config, split)
    idx = embeddings.subsample(images.y, max_points, seed)
    x, y = images.x[idx], images.y[idx]
    out = Embedding(method, y.numpy(), {"before": None})
    try:
        start = embeddings.initial_model(loaded.config, loaded.num_classes)
    except TLabError as e:  # e.g. pretrained weights that can't be had here any more
        start, out.before_error = None, str(e)
    for stage, model in (("before", start), ("after", loaded.model)):
        if model is not None:
            feats = embeddings.extract(model, loaded.spec, x)
            out.stages[stage] = (embeddings.project(feats, method, seed), embeddings.separation(feats, y))
    return out


def study_of_group(group_id: str):
    """The Optuna study behind a search's run group (`tune-STUDY`), from this data
    folder's journal file, and its summary (counts, best trial, trials)."""
    from core.runs import tune

    if not group_id.startswith("tune-"):
        raise TLabError(f"Group {group_id} is not a search.")
    study = tune.load(group_id[len("tune-"):])
    return study, tune.summary(study)
