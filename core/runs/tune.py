"""Hyperparameter search on Optuna: a study whose trials are runs of this lab.

The tuner is a client of the run store, like a page. It asks Optuna for a
trial's settings (TPE by default), queues the trial as a run in one group of
kind `tune` (side by side, so `workers` trials train at once through the
usual queue and workers), feeds each epoch's validation accuracy to the trial
as it lands in the store, and when Optuna's pruner (median by default,
Hyperband as an option) says so, asks the run to stop: it stops at its next
step like a cancel and ends `pruned`, its epochs kept. The objective is the
run's best validation accuracy; the test split is never read while searching.

The study lives in Optuna's storage: by default a journal file in the data
folder (never the run store's SQLite file: Optuna's FAQ warns against SQLite
for parallel trials), or any Optuna storage URL (`postgresql://...`) that
several machines share. `trials` is the study's total, counted in the
storage: killing the tuner loses nothing, and the same command, here or on
another machine, continues the study until it has that many trials. On a
shared database each tuner beats Optuna's heartbeat for its trials; a trial
whose tuner stopped beating (a machine that died) is failed after the grace
period by whichever tuner looks next, so it no longer counts. The engine
knows nothing of any of this.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from core import children, paths
from core.errors import ConfigError, TLabError
from core.runs import jobs, tune_space
from core.runs.store import TERMINAL, Store
from core.train.config import RunConfig
from core.train.validate import validate

log = logging.getLogger(__name__)

KIND = "tune"
PRUNERS = ("median", "hyperband", "none")
POLL_SECONDS = 0.5
HEARTBEAT_ENV = "TLAB_TUNE_HEARTBEAT_S"  # seconds between heartbeats on a shared database (default 60)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def journal_path(study: str) -> Path:
    return paths.home() / "tune" / f"{study}.journal"


def group_id(study: str) -> str:
    """The run group holding this data folder's trials of the study."""
    return f"tune-{study}"


def check_name(study: str) -> str:
    if not _NAME.match(study):
        raise ConfigError(f"Study name {study!r}: use letters, digits, '-', '_' or '.' (at most 64), e.g. lite0-digits.")
    return study


def _storage(study: str, url: str | None):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url is None or url.startswith("journal:"):
        path = Path(url[len("journal:"):]) if url else journal_path(study)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.endswith((".sqlite", ".db")) and Path(url).resolve() == (paths.home() / "tlab.sqlite").resolve():
        raise ConfigError("The search can't live in the run store's own file: give another --storage.")
    heartbeat_s()  # a bad setting is its own message, not "can't open"
    try:
        return _rdb(url)
    except ImportError as e:
        raise ConfigError(f"--storage {url}: a driver is missing ({e}); e.g. `pip install 'psycopg[binary]'` for PostgreSQL.") from None
    except Exception as e:  # a URL SQLAlchemy can't use, a server that doesn't answer
        raise ConfigError(f"--storage {url}: can't open it ({' '.join(str(e).split())[:200]}).") from None


def heartbeat_s() -> int:
    """Seconds between a tuner's heartbeats on a shared database; a trial is stale after three missed."""
    raw = os.environ.get(HEARTBEAT_ENV, "").strip() or "60"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{HEARTBEAT_ENV}={raw!r}: give a whole number of seconds, at least 1 (default 60), or unset it.")
    return int(raw)


def _rdb(url: str):
    """Optuna's RDB storage, with heartbeats. On an empty database, tuners started together
    (a job array) all create Optuna's tables at once, and all but one fail ("... already exists"):
    once the first has made them, opening again finds them made."""
    import optuna

    # Heartbeats are "experimental" in Optuna and "supposed to be used with Study.optimize": the tuner's
    # ask/tell loop beats and checks them itself (Tuner._beat), as Study.optimize does.
    warnings.filterwarnings("ignore", message=r"(Argument ``heartbeat_interval``|Heartbeat of storage|optuna.storages._heartbeat.fail_stale_trials)")
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s(), grace_period=3 * heartbeat_s())
        except Exception as e:
            if "already exists" not in str(e) or attempt == 4:
                raise
            log.info("storage %s: another tuner is creating its tables; opening again", url)
            time.sleep(0.5 * (attempt + 1))


def _beats(storage) -> bool:
    """The storage keeps Optuna's heartbeats (a database opened by `_rdb`; not a journal file)."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


def _pruner(name: str, epochs: int):
    import optuna

    if name == "median":  # three trials to compare with, then any epoch below their median stops
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"Unknown pruner {name!r}: choose {', '.join(PRUNERS)}.")


@dataclass
class _Flight:
    """A trial whose run is queued or training."""

    trial: object  # optuna.trial.Trial
    reported: int = 0  # last epoch fed to the pruner
    pruning: bool = False


@dataclass
class Tuner:
    base: RunConfig
    strategies: list[str]
    trials: int
    study_name: str
    storage: str | None = None
    workers: int = 1
    timeout: float | None = None
    space: list | None = None  # tune_space.Param list from a space file; None: the defaults per strategy
    pruner: str = "median"
    fixed: tuple[str, ...] = ()  # settings the person gave: kept as given, never searched
    store: Store = field(default_factory=Store)
    flights: dict[str, _Flight] = field(default_factory=dict)
    _study: object = field(default=None, init=False, repr=False)
    _beaten: float = field(default=float("-inf"), init=False, repr=False)

    def __post_init__(self):
        check_name(self.study_name)
        if self.trials < 1 or self.workers < 1:
            raise ConfigError("--trials and --workers must be at least 1.")
        if not self.strategies:
            raise ConfigError("Name at least one strategy to search, e.g. --strategies full,partial,discriminative.")
        for s in self.strategies:
            tune_space.for_strategy(self.space, s)  # unknown strategy: one clear message now
        validate(self.base.replace(strategy=self.strategies[0]))
        self.home = str(paths.home().resolve())
        self.pid = os.getpid()
        self.pid_start = children.pid_start(self.pid)

    # -- the study --

    def open(self):
        """The study, opened (or created) once per tuner."""
        if self._study is not None:
            return self._study
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._study = optuna.create_study(study_name=self.study_name, storage=_storage(self.study_name, self.storage),
                                   load_if_exists=True, direction="maximize",
                                   sampler=optuna.samplers.TPESampler(seed=self.base.seed),
                                   pruner=_pruner(self.pruner, self.base.epochs))
        return self._study

    def counted(self, study) -> int:
        """Trials that count toward the total: done, pruned, or under way (here or on another machine)."""
        from optuna.trial import TrialState

        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                            TrialState.RUNNING, TrialState.WAITING)))

    def run(self) -> dict:
        t0 = time.monotonic()
        study = self.open()
        self._adopt(study)
        failures = 0
        while True:
            self._beat(study)
            self._watch(study)
            timed_out = self.timeout is not None and time.monotonic() - t0 > self.timeout
            if len(self.flights) < self.workers and not timed_out and self.counted(study) < self.trials:
                failures = failures + 1 if not self._start(study) else 0
                if failures >= 3:
                    raise ConfigError("Three trials in a row had settings the lab refuses: narrow the search space.")
                continue
            if not self.flights:
                break
            time.sleep(POLL_SECONDS)
        return summary(study, self.store, time.monotonic() - t0)

    def _adopt(self, study) -> None:
        """Trials this data folder started before (a tuner that was stopped or killed):
        watch their runs again; a trial whose run never got queued failed."""
        from optuna.trial import Trial, TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("home") != self.home:
                continue  # another machine's
            if children.pid_alive(t.user_attrs.get("pid", 0), t.user_attrs.get("pid_start")):
                continue  # another tuner here, still watching it
            run_id = t.user_attrs.get("run_id")
            if not run_id or not self.store.query("SELECT 1 FROM runs WHERE id = ?", (run_id,)):
                study.tell(t.number, state=TrialState.FAIL)
                continue
            reported = max(t.intermediate_values, default=0)
            self.flights[run_id] = _Flight(Trial(study, t._trial_id), reported=reported)

    def _beat(self, study, force: bool = False) -> None:
        """On a storage with heartbeats (a database): beat for the trials this tuner watches, and fail
        the trials whose tuner has stopped beating (Optuna's own check), at most once an interval."""
        import optuna

        storage = study._storage
        if not _beats(storage):
            return
        now = time.monotonic()
        if not force and now - self._beaten < heartbeat_s():
            return
        self._beaten = now
        for f in self.flights.values():
            storage.record_heartbeat(f.trial._trial_id)
        optuna.storages.fail_stale_trials(study)

    def _start(self, study) -> bool:
        """Ask for a trial and queue its run. False if its settings are refused (the trial fails)."""
        from optuna.trial import TrialState

        trial = study.ask()
        if self._surplus(study, trial.number):  # another tuner of the study asked at the same moment
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            return True
        trial.set_user_attr("home", self.home)
        trial.set_user_attr("pid", self.pid)
        trial.set_user_attr("pid_start", self.pid_start)
        strategy = (trial.suggest_categorical("strategy", self.strategies) if len(self.strategies) > 1
                    else self.strategies[0])
        params = {p.name: p.suggest(trial) for p in tune_space.for_strategy(self.space, strategy)
                  if p.name not in self.fixed}
        cfg = self.base.replace(strategy=strategy, name=f"trial {trial.number} · {strategy}", **params)
        try:
            validate(cfg)
        except TLabError as e:
            log.warning("trial %d refused: %s", trial.number, e)
            trial.set_user_attr("refused", str(e))
            study.tell(trial, state=TrialState.FAIL)
            return False
        run_id = jobs.launch(cfg, self.store, group_id=group_id(self.study_name), side_by_side=True, kind=KIND)
        trial.set_user_attr("run_id", run_id)
        if _beats(study._storage):
            study._storage.record_heartbeat(trial._trial_id)  # beating from the start: never stale while queued
        shown = ", ".join(f"{k}={_short(v)}" for k, v in {"strategy": strategy, **params}.items())
        self.store.log(run_id, f"trial {trial.number} of study {self.study_name}: {shown}")
        self.flights[run_id] = _Flight(trial)
        return True

    def _surplus(self, study, number: int) -> bool:
        """Counting and asking are two calls: two tuners of one study can both see N-1
        trials and both ask. Trial numbers are handed out in order by the storage, so the
        later one sees the total reached by the trials numbered before its own, and stands down."""
        from optuna.trial import TrialState

        before = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                      TrialState.RUNNING, TrialState.WAITING))
                  if t.number < number]
        return len(before) >= self.trials

    def _watch(self, study) -> None:
        """Feed new epochs to the pruner; stop runs it prunes; tell Optuna how ended runs did."""
        from optuna.trial import TrialState

        for run_id, f in list(self.flights.items()):
            row = self.store.run(run_id)
            for e in self.store.query("SELECT epoch, val_accuracy FROM epoch_metrics WHERE run_id = ? AND epoch > ? "
                                      "AND val_accuracy IS NOT NULL ORDER BY epoch", (run_id, f.reported)):
                f.trial.report(float(e["val_accuracy"]), int(e["epoch"]))
                f.reported = int(e["epoch"])
                if not f.pruning and row["status"] == "running" and f.trial.should_prune():
                    f.pruning = self.store.request_prune(run_id)
                    if f.pruning:
                        self.store.log(run_id, f"pruned after epoch {f.reported}: validation accuracy "
                                               f"{e['val_accuracy']:.4f} is below what earlier trials had by then")
            if row["status"] not in TERMINAL:
                continue
            if row["status"] == "finished" and row["best_val_accuracy"] is not None:
                told = dict(values=float(row["best_val_accuracy"]))
            elif row["status"] == "pruned":
                told = dict(state=TrialState.PRUNED)
            else:  # failed, cancelled by a person, interrupted
                told = dict(state=TrialState.FAIL)
            if study.get_trials(deepcopy=False)[f.trial.number].state == TrialState.RUNNING:
                study.tell(f.trial, **told)  # not yet told by a tuner that adopted it after this one stopped
            del self.flights[run_id]


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary(study, store: Store | None = None, seconds: float | None = None) -> dict:
    """The study's state: counts by state, the best trial with its run and settings."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    out = {"study": study.study_name, "trials": len(trials), **counts, "best": None}
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        best = max(done, key=lambda t: t.value)
        out["best"] = {"trial": best.number, "best_val_accuracy": best.value, "run_id": best.user_attrs.get("run_id"),
                       "params": dict(best.params)}
    out["runs"] = [{"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                    "epochs": max(t.intermediate_values, default=0), "run_id": t.user_attrs.get("run_id"),
                    "params": dict(t.params)} for t in trials]
    return out


def load(study_name: str, storage: str | None = None):
    """An existing study, read-only use (Compare's charts, `tune --show`)."""
    import optuna

    check_name(study_name)
    if storage is None and not journal_path(study_name).exists():
        raise ConfigError(f"No study {study_name!r} in this data folder ({journal_path(study_name)}): "
                          "start it with `python -m core tune --study NAME ...`.")
    try:
        return optuna.load_study(study_name=study_name, storage=_storage(study_name, storage))
    except KeyError:
        raise ConfigError(f"No study {study_name!r} in {storage or journal_path(study_name)}.") from None
