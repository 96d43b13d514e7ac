"""The Experiment page's settings file: upload one to fill the form, download
the form's as TOML, copy it as a `python -m core` command.

Filling the form is generic over RunConfig's fields: a field's widget is the
one keyed by the field's name (a few keys differ, listed in `_SPECIAL`); a
field the form has no widget for is kept from the file and goes into the run
as it was, so nothing in the file is lost."""

from __future__ import annotations

import dataclasses

import streamlit as st

from core.errors import TLabError
from core.service import settings
from core.train import backbones, data, strategies
from core.train.config import RunConfig
from ui.backbone_picker import CATALOGUE, SHORT_LIST
from ui.common import plain

UPLOAD_KEY, EXTRA_KEY, NOTE_KEY = "settings_upload", "settings_extra", "settings_note"


def _widget_values(cfg: RunConfig, folder_choice: str) -> dict:
    """The session-state values of the form's widgets that show `cfg`."""
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)}
    out["labels_per_class"] = cfg.labels_per_class or 0
    out[f"lr_{cfg.strategy}"] = cfg.lr if cfg.lr is not None else strategies.get(cfg.strategy).default_lr
    out[f"freeze_stages_{cfg.backbone}"] = min(cfg.freeze_stages, len(backbones.get(cfg.backbone).groups) - 2)
    if cfg.backbone in backbones.REGISTRY:
        out["backbone_source"] = SHORT_LIST
    else:  # a timm model: the catalogue search, with the model's own name typed in and picked
        del out["backbone"]
        out.update(backbone_source=CATALOGUE, timm_query=cfg.backbone.removeprefix("timm:").split(".")[0],
                   timm_model=cfg.backbone)
    if cfg.dataset.startswith(data.FOLDER_PREFIX):
        out["dataset"], out["folder_path"] = folder_choice, cfg.dataset.removeprefix(data.FOLDER_PREFIX)
    return {k: v for k, v in out.items() if v is not None}


def _on_upload(form_fields: tuple[str, ...], folder_choice: str, race_key: str, mode_keys: dict) -> None:
    up = st.session_state.get(UPLOAD_KEY)
    if up is None:
        return
    try:
        sf = settings.read_upload(up.name, up.getvalue())
        cfg = settings.config_of(sf.runs[0])
        backbones.get(cfg.backbone), strategies.get(cfg.strategy)
        if not cfg.dataset.startswith(data.FOLDER_PREFIX):
            data.get(cfg.dataset)
    except TLabError as e:
        st.session_state[NOTE_KEY] = ("error", str(e))
        return
    st.session_state.update(_widget_values(cfg, folder_choice))
    given = set(sf.runs[0])
    # A group's runs are named for their place in it ("transfer", "scratch twin"): not a name for the form's run.
    st.session_state[EXTRA_KEY] = {k: getattr(cfg, k) for k in given if k not in form_fields and not (sf.group and k == "name")}
    note = f"Filled the form from {up.name}"
    if sf.group:
        mode = mode_keys.get(sf.kind)
        if mode:
            st.session_state["mode"] = mode
        if sf.kind == "race":
            st.session_state[race_key] = [r.get("strategy", RunConfig().strategy) for r in sf.runs]
        note += f": a {sf.kind or 'group'} file of {len(sf.runs)} runs, the first one's settings shown"
    st.session_state[NOTE_KEY] = ("success", note + ".")


def upload_section(form_fields: tuple[str, ...], folder_choice: str, race_key: str, mode_keys: dict) -> None:
    """A settings file (.toml) that fills the form when uploaded."""
    st.file_uploader("Settings file (.toml): fills the form", type=["toml"], key=UPLOAD_KEY,
                     on_change=_on_upload, args=(form_fields, folder_choice, race_key, mode_keys),
                     help="A run folder's config.toml, or a file downloaded with Download settings.")
    note = st.session_state.pop(NOTE_KEY, None)
    if note:
        (st.error if note[0] == "error" else st.success)(plain(note[1]))


def with_extras(cfg: RunConfig, form_fields: tuple[str, ...]) -> RunConfig:
    """The form's config with the uploaded file's fields the form has no widget for."""
    extra = {k: v for k, v in st.session_state.get(EXTRA_KEY, {}).items() if k not in form_fields}
    return cfg.replace(**extra) if extra else cfg


def download_section(base: RunConfig, cfgs: list[RunConfig], kind: str, disabled: bool, command_kind: str | None = None,
                     **options) -> None:
    """Download settings (the runs the form would launch) and the command that
    launches them (from `base`, the form's run, for a group its own options)."""
    name, text = settings.settings_text(cfgs, kind)
    st.download_button("Download settings", text, file_name=name, mime="application/toml", key="download_settings",
                       disabled=disabled, help="Every setting of the run(s) as a TOML file: "
                                               f"`python -m core {'train' if name == 'config.toml' else 'launch'} "
                                               f"--config {name}` trains it.")
    try:
        line = settings.command(base, kind if command_kind is None else command_kind, **options)
    except (KeyError, TLabError):
        line = ""
    if line:
        st.caption("Copy as command (the copy button is at the right of the box):")
        st.code(line, language="bash")
