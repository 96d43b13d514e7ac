"""Run settings as a TOML file a person can read, diff and hand around.

The mapping is generic over `RunConfig`'s dataclass fields: a field added to
the config is written, read, type-checked and offered as a CLI flag without
touching this file. A run file is the fields at the top level; a group file
adds `kind` and lists its runs as `[[runs]]` tables. TOML has no null: a field
that is not set (None) is written as a comment saying so and read back as its
default, which for every optional field is None.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from typing import Any

from core.errors import ConfigError
from core.train.config import RunConfig

HEADER = ("# Transfer Learning Lab run settings: every field of the run, one per line.\n"
          "# Train it with `python -m core train --config {name}` (flags given as well override the file).\n")
GROUP_HEADER = ("# Transfer Learning Lab group settings: the runs of one {kind} group, each with every field.\n"
                "# Queue them again with `python -m core launch --config {name}`.\n")


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(RunConfig)


def field_types() -> dict[str, tuple[type, bool]]:
    """Each field's base type (bool, int, float, str, or tuple/list for a
    sequence such as per-class weights) and whether it may be None."""
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for f in fields():
        t = hints[f.name]
        args = typing.get_args(t) if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union else (t,)
        base = [typing.get_origin(a) or a for a in args if a is not type(None)]
        out[f.name] = (base[0] if len(base) == 1 and isinstance(base[0], type) else str, len(base) < len(args))
    return out


def element_type(name: str) -> type:
    """A sequence field's element type (float for `tuple[float, ...]`)."""
    t = typing.get_type_hints(RunConfig)[name]
    for a in (typing.get_args(t) if typing.get_origin(t) in (typing.Union, types.UnionType) else (t,)):
        inner = [x for x in typing.get_args(a) if x is not Ellipsis]
        if inner and isinstance(inner[0], type):
            return inner[0]
    return str


def known_keys() -> str:
    return ", ".join(f.name for f in fields())


def coerce(name: str, value: Any, where: str = "") -> Any:
    """`value` as field `name`'s type (an int where a float goes; "none" or "" for
    an optional field), or a ConfigError naming the field, the type and the value."""
    kind, optional = field_types()[name]
    if name == "augment" and isinstance(value, bool):  # a file written before augmentation had levels
        value = "light" if value else "none"
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))):
        return None
    if kind in (tuple, list):
        el = element_type(name)
        if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) if el is float
                                           else isinstance(v, el) for v in value):
            return kind(el(v) for v in value)
        raise ConfigError(f"{where}{name} must be a list such as [1.0, 2.0]{' (or left out)' if optional else ''} "
                          f"(got {value!r}).")
    ok = (isinstance(value, bool) if kind is bool
          else isinstance(value, int) and not isinstance(value, bool) if kind is int
          else isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
          else isinstance(value, kind))
    if not ok:
        what = {bool: "true or false", int: "a whole number", float: "a number", str: "text in quotes"}.get(kind, kind.__name__)
        raise ConfigError(f"{where}{name} must be {what}{' (or left out)' if optional else ''} (got {value!r}).")
    return float(value) if kind is float else value


def values_from(table: dict, where: str = "") -> dict:
    """The fields of one run from a parsed TOML table: unknown keys refused
    with the list of the known ones, each value checked against its field's type."""
    known = {f.name for f in fields()}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}unknown setting(s) {', '.join(unknown)}. Known settings: {known_keys()}.")
    return {k: coerce(k, v, where) for k, v in table.items()}


def _body(cfg: RunConfig) -> str:
    import tomli_w

    d = dataclasses.asdict(cfg)
    lines = []
    for f in fields():
        v = d[f.name]
        if v is None:
            lines.append(f"# {f.name} is not set (its default applies)\n")
        else:
            lines.append(tomli_w.dumps({f.name: v}))
    return "".join(lines)


def dumps(cfg: RunConfig, name: str = "config.toml") -> str:
    """One run's settings: every field with its value."""
    return HEADER.format(name=name) + "\n" + _body(cfg)


def dumps_group(cfgs: list[RunConfig], kind: str = "", name: str = "group.toml") -> str:
    """A group's settings: its kind, then each run as a `[[runs]]` table."""
    import tomli_w

    out = [GROUP_HEADER.format(kind=kind or "plain", name=name), "\n", tomli_w.dumps({"kind": kind})]
    for cfg in cfgs:
        out.append("\n[[runs]]\n" + _body(cfg))
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class SettingsFile:
    """A parsed settings file: one run's values, or a group's (`runs` > 1 or a kind)."""

    runs: tuple[dict, ...]
    kind: str = ""
    group: bool = False


def loads(text: str, source: str = "settings file") -> SettingsFile:
    """Parse a run or group file. Raises ConfigError with the line and what to fix."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}. Keys look like `epochs = 5`, text in quotes.") from None
    if "runs" not in doc:
        return SettingsFile((values_from(doc, f"{source}: "),))
    extra = sorted(set(doc) - {"runs", "kind"})
    if extra:
        raise ConfigError(f"{source}: a group file holds `kind` and `[[runs]]` tables only, not {', '.join(extra)}; "
                          f"put run settings inside each [[runs]] table. Known settings: {known_keys()}.")
    runs = doc["runs"]
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{source}: `runs` must be one or more [[runs]] tables of settings.")
    kind = doc.get("kind", "")
    if not isinstance(kind, str):
        raise ConfigError(f"{source}: kind must be text such as \"race\" (got {kind!r}).")
    return SettingsFile(tuple(values_from(r, f"{source}, run {i + 1}: ") for i, r in enumerate(runs)), kind, True)


def read(path) -> SettingsFile:
    from pathlib import Path

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Settings file {p} does not exist: give the path of a .toml file "
                          "(a run folder's config.toml, or one downloaded from the Experiment page).") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Settings file {p} can't be read ({e}): give a UTF-8 .toml file.") from None
    return loads(text, p.name)
