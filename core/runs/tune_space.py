"""What a hyperparameter search varies: a search space per strategy.

The default space per strategy: the learning rate log-uniform around the
strategy's own default, weight decay, augmentation, label smoothing (where the
config has it), and the knobs the strategy reads (`Strategy.uses`: frozen
stages, LR decay, thaw interval). A space file (TOML) replaces it, one table
per parameter:

    [lr]
    low = 1e-4
    high = 3e-2
    log = true

    [freeze_stages]
    low = 0
    high = 3

    [augment]
    choices = [false, true]

A parameter applies to a trial only where the trial's strategy reads it (the
learning rate and the general ones always; `freeze_stages` only for partial,
...), so one file serves every strategy of the study. Only config fields can
be searched; anything else the search does not vary stays as given.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.train import strategies
from core.train.config import RunConfig

@dataclass(frozen=True)
class Param:
    """One searched setting: a float or int range (log-scaled or not), or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        kind = _field_types().get(self.name)
        if kind in (int, "int"):
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def _field_types() -> dict[str, object]:
    return {f.name: f.type for f in dataclasses.fields(RunConfig)}


def _fields() -> set[str]:
    return set(_field_types())


def default_space(strategy: str) -> list[Param]:
    s = strategies.get(strategy)
    space = [Param("lr", s.default_lr / 10, s.default_lr * 3, log=True),
             Param("weight_decay", 1e-6, 1e-2, log=True)]
    augment = RunConfig().augment
    space.append(Param("augment", choices=(False, True) if isinstance(augment, bool) else ("none", "light", "strong")))
    if "label_smoothing" in _fields():
        space.append(Param("label_smoothing", 0.0, 0.2))
    knobs = {"freeze_stages": Param("freeze_stages", 0, 3), "lr_decay": Param("lr_decay", 0.2, 0.9),
             "unfreeze_every": Param("unfreeze_every", 1, 2)}
    return space + [knobs[k] for k in s.uses if k in knobs]


def read_space(path: str | Path) -> list[Param]:
    """A space file: one table per parameter ({low, high[, log]} or {choices}); unknown names refused."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"Search space file {p} does not exist.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"Search space file {p} is not valid TOML ({e}).") from None
    known = _fields() - {"name", "strategy", "backbone", "dataset", "device", "processes", "teacher", "weights"}
    params = []
    for name, spec in raw.items():
        if name not in known:
            raise ConfigError(f"{p}: '{name}' can't be searched. Searchable settings: {', '.join(sorted(known))}.")
        if not isinstance(spec, dict):
            raise ConfigError(f"{p}: [{name}] must be a table with low and high, or choices.")
        unknown = set(spec) - {"low", "high", "log", "choices"}
        if unknown:
            raise ConfigError(f"{p}: [{name}] has {', '.join(sorted(unknown))}; use low, high, log or choices.")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ConfigError(f"{p}: [{name}] choices must be a non-empty list.")
            params.append(Param(name, choices=tuple(spec["choices"])))
            continue
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{p}: [{name}] needs numbers low and high (or a list of choices).") from None
        log = bool(spec.get("log", False))
        if not low < high or (log and low <= 0):
            raise ConfigError(f"{p}: [{name}] needs low < high" + (" and low > 0 for a log scale." if log else "."))
        params.append(Param(name, low, high, log))
    if not params:
        raise ConfigError(f"Search space file {p} names no setting to search.")
    return params


def for_strategy(space: list[Param] | None, strategy: str) -> list[Param]:
    """The parameters a trial of this strategy draws: the file's (those the strategy reads) or the default."""
    if space is None:
        return default_space(strategy)
    uses = strategies.get(strategy).uses  # read_space admits config fields only: all but the knobs apply to every strategy
    return [p for p in space if p.name not in strategies.KNOBS or p.name in uses]
