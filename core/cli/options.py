"""Options several commands share (the strategy's and the training run's) and
the `RunConfig` they make (through the service layer), validated once here at the edge.

Every `RunConfig` field is a flag (`--image-size` for `image_size`), made from
the dataclass itself, so a field added to the config is a flag too. Flags
default to None ("not given"), so that a settings file (`--config FILE`) can
sit between the config's defaults and what the command line says:
RunConfig defaults < the command's own defaults < the file < flags given."""

from __future__ import annotations

import argparse

from core.train import runfile

UNSET = "none"  # `--lr none`, `--labels-per-class all`: back to the default, over the file


class _Unset(str):
    pass


NONE = _Unset(UNSET)

# Help for the flags that need more than their name; any other field gets a plain flag.
HELP = {
    "backbone": "backbone name (see `backbones`), or any timm model as timm:NAME (see `backbones --all`)",
    "strategy": "strategy name (see `strategies`)",
    "lr": "learning rate (default: the strategy's)",
    "freeze_stages": "partial: stem + K body groups frozen",
    "lr_decay": "discriminative: LR factor per group, head to stem",
    "unfreeze_every": "gradual: epochs between unfreezing groups",
    "dataset": "dataset name or folder:PATH",
    "labels_per_class": "K training images per class, or 'all'",
    "device": "auto | cpu | cuda | mps",
    "augment": "augmentation level: none, light or strong (--augment alone: light)",
    "weights": "a weights file (state dict) to start from",
    "compile": "torch.compile the model: a slower start, faster steps after (mostly on a GPU)",
    "precision": "auto | fp32 | bf16 | fp16: autocast precision of the forward passes (fp16 with loss scaling); "
                 "auto: bf16 on a CUDA GPU, fp32 elsewhere",
    "channels_last": "channels_last memory layout for the model and its input (default: on for a CUDA GPU, "
                     "off elsewhere)",
    "name": "a name for the run",
    "val_fraction": "share of the images held out for validation",
    "test_fraction": "share of the images held out for the test",
    "steps": "a fixed number of optimisation steps spread over the epochs (default: whole epochs)",
    "teacher": "distillation: a finished run's id whose soft targets the student learns from",
    "temperature": "distillation temperature T",
    "alpha": "distillation: weight of the teacher's soft targets",
    "processes": "train over N processes with DDP, one per GPU (started with torchrun); --batch-size is the "
                 "global batch. Default: 1, or torchrun's process count under torchrun",
    # The training recipe (README, "Training recipe").
    "use_weights": "best | last: the weights that score the test split and serve Predict, Inspect, export",
    "monitor": "val_loss | val_accuracy: what 'best' and early stopping watch",
    "patience": "stop after N epochs without improvement (default: never)",
    "min_delta": "the smallest change that counts as an improvement",
    "label_smoothing": "e.g. 0.1",
    "class_weights": "none | auto: inverse-frequency loss weights for imbalanced classes",
    "sampler": "shuffle | balanced: every class equally likely in each batch",
    "crop_scale": "random-resized crop keeps at least this share of the area (default: the level's)",
    "flip": "random horizontal flip (default: the level's)",
    "auto_augment": "off | trivial | randaugment on top of the crop (default: the level's)",
    "color_jitter": "brightness/contrast/saturation +- this (default: the level's)",
    "mixup": "probability of MixUp per batch",
    "cutmix": "probability of CutMix per batch",
}
STRATEGY_FIELDS = ("backbone", "strategy", "lr", "freeze_stages", "lr_decay", "unfreeze_every")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def labels(value: str) -> int | None:
    """An argparse type: labels per class, a whole number or 'all' (None)."""
    if value.lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"labels per class must be a whole number or 'all' (got {value!r})") from None


def _labels_flag(value: str):
    """`--labels-per-class`: 'all' is a value given (it overrides a settings file), not an absent flag."""
    v = labels(value) if value.lower() != UNSET else None
    return NONE if v is None else v


def _sequence(kind: type, el: type, optional: bool):
    def parse(value: str):
        if optional and value.strip().lower() == UNSET:
            return NONE
        try:
            return kind(el(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected values separated by commas (got {value!r})") from None
    parse.__name__ = "list"
    return parse


def _typed(kind: type, optional: bool):
    def parse(value: str):
        if optional and value.strip().lower() == UNSET:
            return NONE
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}"
                                             f"{' or none' if optional else ''} (got {value!r})") from None
    parse.__name__ = kind.__name__
    return parse


def _add_field(p: argparse.ArgumentParser, name: str) -> None:
    if flag(name) in p._option_string_actions:  # the command has its own option of that name
        return
    kind, optional = runfile.field_types()[name]
    default = getattr(runfile.RunConfig(), name)
    shown = f"default: {default}" if default not in (None, "") else ""
    text = HELP.get(name, name.replace("_", " "))
    text = text if "default" in text or not shown else f"{text} ({shown})"
    if kind is bool:
        p.add_argument(flag(name), action=argparse.BooleanOptionalAction, default=None, help=text)
    elif kind in (tuple, list):
        p.add_argument(flag(name), type=_sequence(kind, runfile.element_type(name), optional), default=None,
                       help=f"{text}, comma-separated")
    elif name == "augment":  # `--augment` alone, as before it had levels
        p.add_argument(flag(name), nargs="?", const="light", default=None, help=text)
    elif name == "labels_per_class":
        p.add_argument(flag(name), type=_labels_flag, default=None, help=text)
    elif kind in (int, float):
        p.add_argument(flag(name), type=_typed(kind, optional), default=None, help=text)
    else:
        p.add_argument(flag(name), default=None, help=text)


def strategy_options(p: argparse.ArgumentParser) -> None:
    for name in STRATEGY_FIELDS:
        _add_field(p, name)


def config_file_option(p: argparse.ArgumentParser, what: str = "a run file") -> None:
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help=f"settings from {what} (a run folder's config.toml, or one downloaded from the "
                        "Experiment page); flags given as well override it")


def train_options(sp: argparse.ArgumentParser, skip: tuple[str, ...] = (), group_file: bool = False) -> None:
    """Every RunConfig field as a flag (but `skip`, which the command uses for
    something else), `--config`, `--no-progress` and `--json`."""
    strategy_options(sp)
    for f in runfile.fields():
        if f.name not in skip:
            _add_field(sp, f.name)
    config_file_option(sp, "a run file, or a group file listing its runs" if group_file else "a run file")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(not_config=tuple(skip))


def given(args) -> dict:
    """The RunConfig fields the command line set (a flag given), None for 'none'/'all'.
    A command's own option that shares a field's name (`sweep-labels --steps`) is not one."""
    skip = getattr(args, "not_config", ())
    out = {}
    for f in runfile.fields():
        v = getattr(args, f.name, None)
        if v is not None and f.name not in skip:
            out[f.name] = None if isinstance(v, _Unset) else v
    return out


def settings_file(args):
    """The parsed `--config` file, or None."""
    path = getattr(args, "config", None)
    return runfile.read(path) if path else None


def _config(values: dict, check: bool):
    from core.service import forms

    cfg = forms.config_from(values)
    return forms.checked(cfg) if check else cfg


def run_configs(args, check: bool = True, defaults: dict | None = None, **overrides) -> tuple[list, str]:
    """The runs the command line describes, and the group kind its file names:
    one run (a run file or none), or each run of a group file, with the flags given over them."""
    sf = settings_file(args)
    bases = sf.runs if sf is not None else ({},)
    flags = given(args)
    cfgs = [_config({**(defaults or {}), **base, **flags, **overrides}, check) for base in bases]
    return cfgs, (sf.kind if sf is not None else "")


def run_config(args, check: bool = True, defaults: dict | None = None, **overrides):
    """The `RunConfig` of parsed strategy/training options (and `--config`
    file, with `overrides`), checked here at the edge unless the caller checks
    what it derives from it."""
    from core.errors import ConfigError

    sf = settings_file(args)
    if sf is not None and sf.group:
        raise ConfigError(f"{args.config} is a group file ({len(sf.runs)} runs): give one run's settings file here, "
                          "or queue the whole group with `python -m core launch --config FILE`.")
    return run_configs(args, check, defaults, **overrides)[0][0]
