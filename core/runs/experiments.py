"""Experiments that answer questions: a group of runs launched together.

- race: one backbone and dataset under several strategies, same budget and seed;
- sweep: labels per class x strategies x seeds, each point the same number of
  optimisation steps (batches drawn with replacement);
- distill: a student learning from a finished teacher run, and the same
  student alone as its twin.
"""

from __future__ import annotations

import pandas as pd

from core.errors import ConfigError
from core.runs import jobs
from core.runs.store import Store
from core.train import backbones, strategies
from core.train.config import RunConfig

RACE, SWEEP, DISTILL = "race", "sweep", "distill"


def race_configs(base: RunConfig, names: list[str]) -> list[RunConfig]:
    if len(names) < 2:
        raise ConfigError("A race needs at least two strategies, e.g. feature_extraction,full,scratch.")
    for n in names:
        strategies.get(n)
    if len(set(names)) != len(names):
        raise ConfigError(f"Each strategy races once: {', '.join(names)} repeats one.")
    return [base.replace(strategy=n, lr=None, name=n) for n in names]


def sweep_configs(base: RunConfig, names: list[str], labels: list[int | None], seeds: int, steps: int) -> list[RunConfig]:
    if not names:
        raise ConfigError("Name at least one strategy to sweep, e.g. full,scratch.")
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1 (got {seeds}).")
    for n in names:
        strategies.get(n)
    return [base.replace(strategy=n, lr=None, labels_per_class=k, seed=base.seed + s, steps=steps, epochs=1,
                         name=f"{n} · {k or 'all'}/class · seed {base.seed + s}")
            for n in names for k in labels for s in range(seeds)]


def distill_configs(teacher_run: dict, student: str, temperature: float, alpha: float,
                    epochs: int | None = None, image_size: int | None = None) -> list[RunConfig]:
    """The student with the teacher, and the same student alone (its twin)."""
    if teacher_run["status"] != "finished":
        raise ConfigError(f"Teacher run {teacher_run['id']} is {teacher_run['status']}: pick a finished run.")
    t = RunConfig.from_json(teacher_run["config"])
    spec = backbones.get(student)
    strategy = RunConfig().strategy if spec.has_pretrained else strategies.baseline().name
    base = RunConfig(backbone=student, strategy=strategy, dataset=t.dataset, epochs=epochs or t.epochs,
                     image_size=image_size or t.image_size, batch_size=t.batch_size, seed=t.seed,
                     labels_per_class=t.labels_per_class, device=t.device, augment=t.augment,
                     val_fraction=t.val_fraction, test_fraction=t.test_fraction,
                     temperature=temperature, alpha=alpha)
    return [base.replace(teacher=teacher_run["id"], name=f"{student} + KD"), base.replace(name=f"{student} alone")]


def launch(kind: str, cfgs: list[RunConfig], store: Store | None = None, side_by_side: bool = False) -> tuple[str, list[str]]:
    return jobs.launch_group(cfgs, side_by_side=side_by_side, store=store, kind=kind)


def wait_all(ids: list[str], store: Store | None = None) -> list[dict]:
    return [jobs.wait(i, store) for i in ids]


def summarise_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy over seeds per (strategy, labels per class): mean, std, n.
    Runs without a test accuracy (failed, cancelled, still going) don't count."""
    done = runs[runs["test_accuracy"].notna()].copy()
    cols = ["strategy", "labels_per_class", "mean", "std", "n"]
    if done.empty:
        return pd.DataFrame(columns=cols)
    done["labels_per_class"] = done["labels_per_class"].map(lambda k: "all" if k is None or k != k else int(k))
    out = (done.groupby(["strategy", "labels_per_class"], sort=False)["test_accuracy"]
           .agg(mean="mean", std=lambda v: float(v.std(ddof=0)), n="count").reset_index())
    out["order"] = out["labels_per_class"].map(lambda k: float("inf") if k == "all" else k)
    return out.sort_values(["strategy", "order"]).drop(columns="order").reset_index(drop=True)[cols]


def parse_labels(text: str) -> list[int | None]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "all":
            out.append(None)
            continue
        try:
            k = int(part)
        except ValueError:
            raise ConfigError(f"labels must be whole numbers or 'all', separated by commas (got {part!r}).") from None
        if k < 1:
            raise ConfigError(f"labels per class must be at least 1 (got {k}).")
        out.append(k)
    if not out:
        raise ConfigError("Give at least one labels-per-class value, e.g. 1,5,10,all.")
    return out
