"""Runs moved between data folders from the pages: a pack of runs to
download, an uploaded pack unpacked into this data folder (checked like any
upload: core/runs/portable.py)."""

from __future__ import annotations

from core.runs import portable


def pack(run_ids: list[str]) -> bytes:
    """The pack (ZIP) of these ended runs. Raises TLabError."""
    return portable.pack_bytes(list(run_ids))


def unpack_upload(name: str, content: bytes) -> list[str]:
    """Add an uploaded pack's runs to this data folder; their ids. Raises TLabError."""
    return portable.unpack_bytes(name, content)
