"""A form's runs as a settings file and as the command that runs them, and an
uploaded settings file read back: what the Experiment page's "Download
settings", "Copy as command" and settings upload call."""

from __future__ import annotations

import dataclasses
import shlex

from core import limits
from core.errors import ConfigError
from core.train import runfile
from core.train.config import RunConfig

SWEEP_IMAGE_SIZE = 48  # `sweep-labels`' own default image size (core/cli/experiments.py)
MAX_SETTINGS_BYTES = 1024 * 1024  # a settings file is a page of text


def settings_text(cfgs: list[RunConfig], kind: str = "") -> tuple[str, str]:
    """(file name, TOML) for the runs a form would launch: one run's file, or a
    group file listing each of its runs."""
    if len(cfgs) == 1 and not kind:
        return "config.toml", runfile.dumps(cfgs[0])
    name = f"{kind or 'group'}.toml"
    return name, runfile.dumps_group(list(cfgs), kind, name)


def _value(v) -> str:
    if v is None:
        return "none"
    return shlex.quote(str(v) if not isinstance(v, float) else repr(v))


def flags(cfg: RunConfig, base: RunConfig | None = None, always: tuple[str, ...] = ()) -> list[str]:
    """The CLI flags that turn `base` (RunConfig's defaults) into `cfg`: one per field that differs."""
    base = base or RunConfig()
    out = []
    for f in dataclasses.fields(RunConfig):
        v = getattr(cfg, f.name)
        if v == getattr(base, f.name) and f.name not in always:
            continue
        name = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            out.append(name if v else "--no-" + name[2:])
        elif f.name == "labels_per_class" and v is None:
            out += [name, "all"]
        elif isinstance(v, (tuple, list)):
            out += [name, _value(",".join(repr(x) if isinstance(x, float) else str(x) for x in v))]
        else:
            out += [name, _value(v)]
    return out


def command(cfg: RunConfig, kind: str = "", **options) -> str:
    """The `python -m core ...` line that queues what the form would launch.
    `options` are the group's own: strategies (race, sweep), labels, seeds,
    steps (sweep), teacher, student (distill)."""
    if kind == "race":
        args = ["race", *flags(cfg), "--strategies", ",".join(options["strategies"])]
    elif kind == "sweep":
        args = ["sweep-labels", *flags(cfg, RunConfig(image_size=SWEEP_IMAGE_SIZE)),
                "--strategies", ",".join(options["strategies"]), "--labels", ",".join(options["labels"]),
                "--seeds", str(options["seeds"]), "--steps", str(options["steps"])]
    elif kind == "distill":
        args = ["distill", "--teacher", _value(options["teacher"]), "--student", _value(options["student"]),
                "--temperature", _value(float(options.get("temperature", cfg.temperature))),
                "--alpha", _value(float(options.get("alpha", cfg.alpha)))]
    elif kind == "tune":  # the strategy and LR are searched; the other flags fix their setting in every trial
        args = ["tune", *flags(cfg.replace(strategy=RunConfig().strategy, lr=None)),
                "--strategies", ",".join(options["strategies"]), "--trials", str(options["trials"]),
                "--study", _value(options["study"])]
    else:
        args = ["launch", *flags(cfg)]
    return " ".join(["python -m core", *args])


def read_upload(name: str, content: bytes) -> runfile.SettingsFile:
    """An uploaded settings file, parsed and checked field by field. Raises ConfigError."""
    if len(content) > min(MAX_SETTINGS_BYTES, limits.max_upload_bytes()):
        raise ConfigError(f"{name} is {len(content):,} bytes: a settings file is a short text file "
                          "(a run folder's config.toml or one downloaded here).")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not a text file: upload a .toml settings file.") from None
    return runfile.loads(text, name)


def config_of(values: dict) -> RunConfig:
    """One run's parsed values as a RunConfig (its own ranges checked)."""
    from core.train.config import check_ranges

    return check_ranges(RunConfig.from_dict(values))
