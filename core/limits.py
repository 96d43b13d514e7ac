"""Limits on what people hand the app, as settings: a default here, an
environment variable to change it. Every message that refuses something
names the limit and the variable, so a person knows what to raise.

| setting | variable | default |
| --- | --- | --- |
| upload size | TLAB_MAX_UPLOAD_MB | 200 MB (also `server.maxUploadSize` in .streamlit/config.toml) |
| pixels per image | TLAB_MAX_IMAGE_PIXELS | 40,000,000 (e.g. 8000 x 5000) |
| uncompressed size of an archive | TLAB_MAX_ARCHIVE_MB | 2,000 MB |
| compression ratio of an archive entry | TLAB_MAX_ZIP_RATIO | 200 |
| files per dataset (archive or folder) | TLAB_MAX_FILES | 100,000 |
| cache size (decoded data, features, teacher logits) | TLAB_CACHE_MB | a quarter of the caches plus the free disk |
| folders `folder:PATH` may read | TLAB_FOLDER_ROOTS | the data folder, plus those `python -m core allow` recorded; list more, separated by `:` (`;` on Windows) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    name: str  # what it limits, for messages
    env: str
    default: float
    unit: str = ""

    def value(self) -> float:
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            v = float(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{self.env}={raw!r} is not a number: set it to a {self.name} "
                              f"such as {self.default:g}, or unset it.") from None
        if not v > 0:
            raise ConfigError(f"{self.env}={raw!r} must be positive: set it to a {self.name} such as {self.default:g}.")
        return v

    def describe(self) -> str:
        """'the limit on X (N unit, set TLAB_...)', for the end of a message."""
        v = self.value()
        shown = f"{v:,.0f}" if v == int(v) else f"{v:g}"
        return f"the {self.name} limit ({shown}{' ' + self.unit if self.unit else ''}; raise it with {self.env})"


MAX_UPLOAD_MB = Limit("upload size", "TLAB_MAX_UPLOAD_MB", 200, "MB")
MAX_IMAGE_PIXELS = Limit("pixels per image", "TLAB_MAX_IMAGE_PIXELS", 40_000_000, "pixels")
MAX_ARCHIVE_MB = Limit("uncompressed archive size", "TLAB_MAX_ARCHIVE_MB", 2_000, "MB")
MAX_ZIP_RATIO = Limit("compression ratio", "TLAB_MAX_ZIP_RATIO", 200)
MAX_FILES = Limit("files per dataset", "TLAB_MAX_FILES", 100_000, "files")
# Its default (0 here) means: a quarter of what the caches and the free disk hold (core.train.cache.cap_bytes).
CACHE_MB = Limit("cache size", "TLAB_CACHE_MB", 0, "MB")
FOLDER_ROOTS_ENV = "TLAB_FOLDER_ROOTS"

ALL = (MAX_UPLOAD_MB, MAX_IMAGE_PIXELS, MAX_ARCHIVE_MB, MAX_ZIP_RATIO, MAX_FILES)


def max_upload_bytes() -> int:
    return int(MAX_UPLOAD_MB.value() * 1024 * 1024)


def max_image_pixels() -> int:
    return int(MAX_IMAGE_PIXELS.value())


def max_archive_bytes() -> int:
    return int(MAX_ARCHIVE_MB.value() * 1024 * 1024)


def max_zip_ratio() -> float:
    return MAX_ZIP_RATIO.value()


def max_files() -> int:
    return int(MAX_FILES.value())


def folder_roots_setting() -> list[str]:
    """Extra folders `folder:PATH` may read, as the person listed them."""
    return [p for p in os.environ.get(FOLDER_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
