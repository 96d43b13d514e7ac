"""Runs made and queued: a run and its from-scratch twin, a group of runs
checked once at this entry point (the worker checks each again in its own
process), and the pages' other heavy work (the LR finder, the strategy
advisor, an export) as background tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from core import paths
from core.runs import jobs, tasks
from core.runs.store import Store
from core.train import data, strategies
from core.train.config import RunConfig
from core.train.validate import validate


def with_scratch_twin(cfg: RunConfig, twin: bool = True) -> tuple[list[RunConfig], bool]:
    """The run and, when it starts from pretrained weights and `twin` is asked
    for, the same run from random weights (same data, budget and seed; the
    baseline strategy's own LR), named so the Live page tells them apart. Also
    whether they train side by side: runs over several processes each go one
    after the other."""
    if not twin or not strategies.get(cfg.strategy).pretrained:
        return [cfg], False
    twin_cfg = cfg.replace(strategy=strategies.baseline().name, weights=None, lr=None, name="scratch twin")
    return [cfg.replace(name="transfer"), twin_cfg], cfg.processes == 1


@dataclass(frozen=True)
class Batch:
    """Runs checked at the entry point, ready to be queued as one group."""

    configs: tuple[RunConfig, ...]
    kind: str = ""
    side_by_side: bool = False


def prepare(cfgs: Sequence[RunConfig], kind: str = "", side_by_side: bool = False) -> Batch:
    """Check every run (registries, ranges, and whether this machine has the
    GPUs its processes need) before any is queued. Raises TLabError."""
    for c in cfgs:
        validate(c)
        jobs.check_processes_fit(c)
    return Batch(tuple(cfgs), kind, side_by_side)


def launch(batch: Batch, store: Store | None = None) -> tuple[str, list[str]]:
    """Queue a prepared group and make sure workers are alive: (group id, run ids)."""
    return jobs.launch_group(batch.configs, side_by_side=batch.side_by_side, store=store, kind=batch.kind)


def launch_one(cfg: RunConfig, store: Store | None = None) -> str:
    """Check and queue one run on its own; its id."""
    prepare([cfg])
    return jobs.launch(cfg, store)


def start_lr_finder(cfg: RunConfig, steps: int) -> tasks.Task:
    """The LR range test for the config, in a background task (never in the
    page's process); its --json output is an `LRFinderResult` dict. The
    config is checked here first, so a bad one fails before a process starts."""
    validate(cfg)
    return tasks.start(["lr-find", "--config-json", cfg.to_json(), "--steps", str(int(steps)),
                        "--json"])


def start_advisor(dataset: str, labels_per_class: int | None, image_size: int, seed: int) -> tasks.Task:
    """The strategy advisor's measurements (forward passes through every
    pretrained backbone available here) in a background task; its --json output
    is an `Advice` dict. An unknown dataset fails here, before a process starts."""
    data.get(dataset)
    return tasks.start(["advise", "--dataset", dataset, "--labels-per-class", str(labels_per_class or "all"),
                        "--image-size", str(int(image_size)), "--seed", str(int(seed)), "--json"])


def start_decode(dataset: str, image_size: int) -> tasks.Task:
    """A folder decoded at `image_size` into the data folder's cache (`python -m
    core datasets --decode`) in a background task: its last stderr line is the
    progress ('decoding images: 4,000 / 20,000 (20%)'), its --json output the
    result. A folder outside the allowed roots fails here, before a process starts."""
    data.folder_path(dataset)
    return tasks.start(["datasets", "--decode", dataset, "--image-size", str(int(image_size)), "--json"])


def start_search(cfg: RunConfig, strategy_names: list[str], trials: int, study: str, timeout_s: float | None = None,
                 workers: int = 1) -> tasks.Task:
    """A hyperparameter search (`python -m core tune`) over the form's settings, in a
    background task: its trials are queued as runs while it goes. The form's values are
    the base the search starts from (nothing is fixed), written as the study's run file."""
    from core.runs import tune
    from core.train import runfile

    tune.check_name(study)
    for name in strategy_names:
        validate(cfg.replace(strategy=name))
    path = tune.journal_path(study).with_suffix(".toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(runfile.dumps(cfg))
    args = ["tune", "--config", str(path), "--strategies", ",".join(strategy_names), "--trials", str(int(trials)),
            "--study", study, "--workers", str(int(workers)), "--json"]
    return tasks.start(args + (["--timeout", str(float(timeout_s))] if timeout_s else []))


def start_export(run_id: str, fmt: str) -> tasks.Task:
    """A finished run exported (TorchScript or ONNX) into the data folder's
    exports/ and checked against the PyTorch model on its test images, in a
    background task; its --json output names the file and the check."""
    paths.check_run_id(run_id)
    return tasks.start(["export", "--run", run_id, "--format", fmt, "--verify", "--json"])
